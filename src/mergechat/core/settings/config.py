"""Typed user settings from ``config.toml``: validated per key on load; only what the user
changes is written back (`write` keeps the rest of the file). Reading is `config_read`, the
tables are `tables`; this is the one module the app, the CLI and doctor import them from."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

from mergechat.core.model.target import model_key
from mergechat.core.settings import locations
from mergechat.core.settings.config_read import read_config
from mergechat.core.settings.recent_models import MAX_RECENT_MODELS
from mergechat.core.settings.rules import GENERATION_RULES
from mergechat.core.settings.rules import check_generation_value as check_generation_value
from mergechat.core.settings.rules import parse_generation_field as parse_generation_field
from mergechat.core.settings.tables import DEFAULT_THEME as DEFAULT_THEME
from mergechat.core.settings.tables import Config as Config
from mergechat.core.settings.tables import HistoryConfig as HistoryConfig
from mergechat.core.settings.tables import ModelConfig as ModelConfig
from mergechat.core.visible import escape_control

#: At most this many problem lines are returned (F1 and doctor list them all); one more line
#: says how many were left out.
MAX_PROBLEMS = 100


def load_config(path: Path | None = None) -> tuple[Config, list[str]]:
    """Read the config file; return the settings and one problem line per thing ignored.

    ``path`` defaults to `locations.config_file` (``$MERGECHAT_CONFIG`` overrides it). A missing
    file gives the defaults silently; an unreadable or invalid file gives the defaults and one
    problem; each invalid value falls back to that key's default with a problem naming the file,
    line (when found), key and reason. Each problem is one line (control characters escaped),
    at most `MAX_PROBLEMS` of them. Never raises for anything in the file.
    """
    path = path or locations.config_file()
    config, problems = read_config(path)
    if len(problems) > MAX_PROBLEMS:
        left_out = len(problems) - MAX_PROBLEMS + 1
        problems = [*problems[: MAX_PROBLEMS - 1], f"{path}: {left_out} more problems not shown"]
    return config, [escape_control(p) for p in problems]


def remember_model(config: Config, path: str | Path) -> Config:
    """A copy of ``config`` with ``path`` (made absolute) first in the recent models (max 10)."""
    if not str(path).strip():
        return config
    entry = model_key(path)
    others = [p for p in config.recent_models if model_key(p) != entry]
    return replace(config, recent_models=[entry, *others][:MAX_RECENT_MODELS])


def settings_items(config: Config) -> dict[tuple[str, str], object]:
    """Every value `save_config` may write, by (table, key); None: not set (the model decides).

    The recent models are not among them: they are machine state (`recent_models` module).
    """
    items: dict[tuple[str, str], object] = {
        ("model", f.name): getattr(config.model, f.name) for f in fields(ModelConfig)
    }
    items.update({("generation", n): getattr(config.generation, n) for n in GENERATION_RULES})
    items[("ui", "theme")] = config.theme
    items.update(
        {("history", f.name): getattr(config.history, f.name) for f in fields(HistoryConfig)}
    )
    items.update({("keymap", k): v for k, v in config.keymap.items()})
    return items


def config_text(config: Config) -> str:
    """The whole file for ``config`` (a new file): every key, unset ones as comments."""
    sections: dict[str, dict[str, object]] = {}
    for (table, key), value in settings_items(config).items():
        sections.setdefault(table, {})[key] = value
    sections.setdefault("keymap", {})  # an empty table shows where keys are changed
    from mergechat.core.settings import (
        write as config_write,  # tomlkit: only when writing (not at start-up)
    )

    return config_write.new_document(sections).as_string()


def save_config(
    config: Config, path: Path | None = None, *, previous: Config | None = None
) -> Path:
    """Write the settings of ``config`` that differ from ``previous`` into the file.

    ``previous`` (default: what the file holds now) is what the user started from: only keys the
    user changed are written, so comments, unknown keys and values mergechat could not read stay
    as they are. A missing file is written whole. A file that cannot be read or parsed is never
    replaced. Returns the file; raises `MergechatError` when nothing could be saved.
    """
    from mergechat.core.settings import (
        write as config_write,  # tomlkit: only when writing (not at start-up)
    )

    path = path or locations.config_file()
    if path.is_symlink():  # keep a dotfiles symlink intact: write where it points
        path = path.resolve()
    doc = config_write.read_document(path)
    new = settings_items(config)
    if doc is None:
        config_write.write_with_backup(path, config_text(config))
        return path
    old = settings_items(previous if previous is not None else read_config(path)[0])
    changes = {k: v for k, v in new.items() if k not in old or old[k] != v}
    changes.update({k: None for k in old.keys() - new.keys()})  # keymap entries removed
    if changes:
        config_write.apply_changes(doc, changes)
        config_write.write_with_backup(path, doc.as_string())
    return path
