"""Read ``config.toml`` into a `Config`: each key validated on its own, one problem line (file,
line, key, reason) per value ignored, never an exception for anything in the file."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from mergechat.core.model.target import model_key
from mergechat.core.settings import rules
from mergechat.core.settings.generation import Bound, GenerationSettings
from mergechat.core.settings.recent_models import MAX_RECENT_MODELS
from mergechat.core.settings.rules import GENERATION_RULES, NAME_RE, show_value
from mergechat.core.settings.tables import DEFAULT_THEME, Config, HistoryConfig, ModelConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

_TABLES = ("model", "generation", "ui", "keymap", "history")
_BINDING_ID_MAX = 64


def read_config(path: Path) -> tuple[Config, list[str]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config(), []
    except OSError as exc:
        return Config(), [f"{path}: cannot read it ({exc.strerror or exc}); using the defaults"]
    try:
        # A byte order mark (some Windows editors write one) is not TOML: drop it.
        text = raw.decode("utf-8").removeprefix("\ufeff")
        document = tomllib.loads(text)
    except UnicodeDecodeError:
        return Config(), [f"{path}: not UTF-8 text; using the defaults"]
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        found = re.search(r"at line (\d+)", str(exc))
        where = f"{path}:{found.group(1)}" if found else str(path)
        return Config(), [f"{where}: invalid TOML: {exc}; using the defaults (the file is kept)"]
    reader = _Reader(path, text)
    return reader.read(document), reader.problems


class _Reader:
    """Turns a parsed TOML document into a `Config`, collecting one problem per bad key."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = _line_index(text.splitlines())
        self.problems: list[str] = []

    def read(self, doc: dict[str, Any]) -> Config:
        model_t, gen_t, ui_t, keymap_t, history_t = (self._table(doc, name) for name in _TABLES)
        # [remote] api_key is read only by `mergechat.core.remote.auth`, never kept in a Config.
        self._unknown(doc, "", {*_TABLES, "remote"})
        self._unknown(self._table(doc, "remote"), "remote", {"api_key"})
        self._unknown(model_t, "model", {f.name for f in fields(ModelConfig)})
        self._unknown(gen_t, "generation", set(GENERATION_RULES))
        self._unknown(ui_t, "ui", {"theme", "recent_models"})
        self._unknown(history_t, "history", {f.name for f in fields(HistoryConfig)})
        defaults = ModelConfig()
        model = ModelConfig(
            path=self._get(model_t, "model.path", rules.path_value, defaults.path),
            device=self._get(model_t, "model.device", rules.device, defaults.device),
            dtype=self._get(model_t, "model.dtype", rules.dtype_choice, defaults.dtype),
            trust_remote_code=self._get(
                model_t, "model.trust_remote_code", rules.boolean_value, defaults.trust_remote_code
            ),
        )
        base = GenerationSettings()
        generation = GenerationSettings(
            **{
                name: self._get(gen_t, f"generation.{name}", rule, getattr(base, name))
                for name, rule in GENERATION_RULES.items()
            }
        )
        theme = self._get(ui_t, "ui.theme", rules.theme_name, DEFAULT_THEME)
        history_defaults = HistoryConfig()
        history = HistoryConfig(
            **{
                f.name: self._get(
                    history_t,
                    f"history.{f.name}",
                    rules.boolean_value,
                    getattr(history_defaults, f.name),
                )
                for f in fields(HistoryConfig)
            }
        )
        return Config(model, generation, theme, self._recent(ui_t), self._keymap(keymap_t), history)

    def _where(self, dotted: str) -> str:
        line = self.lines.get(dotted)
        return f"{self.path}:{line}" if line else str(self.path)

    def _problem(self, dotted: str, reason: str, value: object, outcome: str) -> None:
        self.problems.append(
            f"{self._where(dotted)}: {dotted}: {reason}, got {show_value(value)}; {outcome}"
        )

    def _table(self, doc: dict[str, Any], name: str) -> dict[str, Any]:
        value = doc.get(name, {})
        if isinstance(value, dict):
            return value
        self._problem(name, "must be a table", value, "using the defaults")
        return {}

    def _unknown(self, table: dict[str, Any], prefix: str, known: set[str]) -> None:
        for key in table:
            if key not in known:
                dotted = f"{prefix}.{key}" if prefix else key
                self.problems.append(f"{self._where(dotted)}: unknown key {dotted!r}; ignored")

    def _get(self, table: dict[str, Any], dotted: str, check: Any, default: Any) -> Any:
        key = dotted.rsplit(".", 1)[-1]
        if key not in table:
            return default
        try:
            return (
                rules.convert(check, table[key]) if isinstance(check, Bound) else check(table[key])
            )
        except ValueError as exc:
            self._problem(dotted, str(exc), table[key], "using the default")
            return default

    def _recent(self, ui: dict[str, Any]) -> list[str]:
        value = ui.get("recent_models", [])
        if not isinstance(value, list):
            self._problem("ui.recent_models", "must be an array of strings", value, "ignored")
            return []
        recent: list[str] = []
        seen: set[str] = set()
        for item in value:
            if not isinstance(item, str) or not item.strip() or "\x00" in item:
                self._problem("ui.recent_models", "items must be paths", item, "skipped")
            elif len(recent) < MAX_RECENT_MODELS and (key := model_key(item)) not in seen:
                seen.add(key)
                recent.append(item)
        return recent

    def _keymap(self, table: dict[str, Any]) -> dict[str, str]:
        keymap: dict[str, str] = {}
        for binding_id, value in _flatten(table):
            dotted = f"keymap.{binding_id}"
            if not NAME_RE.fullmatch(binding_id):
                shown = show_value(dotted)
                self.problems.append(f"{self._where(dotted)}: {shown}: not a binding id; ignored")
                continue
            try:
                keymap[binding_id] = rules.keys_value(value)
            except ValueError as exc:
                self._problem(dotted, str(exc), value, "keeping the default keys")
        return keymap


def _flatten(table: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    # `app.quit = "..."` is a dotted key in TOML (a nested table); binding ids use the dots.
    # Iterative, and no deeper than a binding id can be long: `[keymap.a.a.a...]` thousands of
    # levels deep must not exhaust the stack.
    stack: list[tuple[str, Iterator[tuple[str, Any]]]] = [("", iter(table.items()))]
    while stack:
        prefix, items = stack[-1]
        for key, value in items:
            name = f"{prefix}{key}"
            if isinstance(value, dict) and len(name) <= _BINDING_ID_MAX:
                stack.append((f"{name}.", iter(value.items())))
                break
            yield name, value
        else:
            stack.pop()


def _line_index(lines: list[str]) -> dict[str, int]:
    """1-based line of each ``table.key`` (and of each ``[table]``) in the text, first wins.

    One pass, so a file with thousands of bad keys is still read at once.
    """
    index: dict[str, int] = {}
    current = ""
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        header = re.fullmatch(r"\[\s*([^\[\]]+?)\s*\](?:\s*#.*)?", stripped)
        if header:
            current = header.group(1)
            index.setdefault(current, number)
        elif "=" in stripped:
            head = stripped.split("=", 1)[0].strip().strip("\"'")
            index.setdefault(f"{current}.{head}" if current else head, number)
    return index
