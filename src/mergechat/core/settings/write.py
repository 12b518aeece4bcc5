"""Writing ``config.toml`` without losing what the user wrote: tomlkit edits only the keys that
changed (comments, unknown tables and untouched values stay), a file that does not parse is never
replaced, and the previous file is kept as ``config.toml.bak``."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Table

from mergechat.core.errors import MergechatError
from mergechat.core.settings import locations
from mergechat.core.settings.atomic import atomic_write

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: (table, key) -> value; None removes the key (a generation value left to the model's default).
Changes = Mapping[tuple[str, str], object]

HEADER = (
    "mergechat settings. Edit freely: mergechat keeps your comments and other keys,",
    "and writes only what you change in its settings screen (the old file: config.toml.bak).",
)

_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def backup_path(path: Path) -> Path:
    """Where the previous file is kept each time the settings are saved."""
    return path.with_name(path.name + ".bak")


def read_document(path: Path) -> tomlkit.TOMLDocument | None:
    """The file as an editable document; None when it does not exist.

    Raises `MergechatError` when it cannot be read or is not valid TOML: such a file is the
    user's to fix, so it is never written over.
    """
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None  # writing it then says why it cannot be created
    except OSError as exc:
        raise _refusal(path, f"it cannot be read ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
        tomllib.loads(text)  # what load_config reads: both parsers must accept the file
        return tomlkit.parse(text)
    except UnicodeDecodeError as exc:
        raise _refusal(path, "it is not UTF-8 text") from exc
    except (tomllib.TOMLDecodeError, TOMLKitError, RecursionError) as exc:
        raise _refusal(path, f"it is not valid TOML ({exc})") from exc


def _refusal(path: Path, reason: str) -> MergechatError:
    return MergechatError(
        f"settings not saved: {path} was not changed because {reason}",
        hint="fix or move that file, then save again (this session keeps the new settings)",
    )


def new_document(sections: Mapping[str, Mapping[str, object]]) -> tomlkit.TOMLDocument:
    """A whole file for ``{table: {key: value}}`` (None: a comment saying the model decides)."""
    doc = tomlkit.document()
    for line in HEADER:
        doc.add(tomlkit.comment(line))
    for name, values in sections.items():
        table = tomlkit.table()
        for key, value in values.items():
            if value is None:
                table.add(tomlkit.comment(f"{key} = ...  (not set: the model's default)"))
            else:
                table.add(key, _plain(value))
        doc.add(name, table)
    return doc


def apply_changes(doc: tomlkit.TOMLDocument, changes: Changes) -> None:
    """Set or remove each changed key in ``doc``, creating its table when missing."""
    for (table_name, key), value in changes.items():
        table = doc.get(table_name)
        if not isinstance(table, (Table, dict)):
            if value is None:
                continue
            if table_name in doc:  # not a table (load_config reported it): replace it
                del doc[table_name]
            table = tomlkit.table()
            doc.add(table_name, table)
        if value is None:
            table.pop(key, None)
        else:
            table[key] = _plain(value)


def _plain(value: object) -> object:
    # A lone surrogate (pasted into a field) cannot be written as UTF-8: replace it.
    if isinstance(value, str):
        return _SURROGATE_RE.sub("\ufffd", value)
    return value


def write_with_backup(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically (0600, folder 0700), the old file kept as ``.bak``.

    Raises `MergechatError` when it cannot be written; the old file is then unchanged.
    """
    try:
        locations.ensure_private_dir(path.parent)
        if path.exists():
            atomic_write(backup_path(path), path.read_bytes())
        atomic_write(path, text.encode("utf-8"))
    except OSError as exc:
        raise MergechatError(
            f"cannot save settings to {path}: {exc.strerror or exc}",
            hint=f"check the folder's permissions or set ${locations.ENV_CONFIG_FILE}",
        ) from exc
