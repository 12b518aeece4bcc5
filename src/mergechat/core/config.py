"""Typed user settings from ``config.toml``: validated per key on load, written back atomically."""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from mergechat.core import locations
from mergechat.core.api import GenerationSettings
from mergechat.core.dtypes import normalize_dtype
from mergechat.core.errors import MergechatError
from mergechat.core.toml_text import toml_key, toml_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_THEME = "mergechat-dark"
MAX_RECENT_MODELS = 10
#: At most this many problem lines are returned (the app shows each as a notice); one more
#: line says how many were left out.
MAX_PROBLEMS = 12
_DEVICE_RE = re.compile(r"auto|cpu|mps|(?:cuda|xpu)(?::\d{1,3})?")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_KEY_RE = re.compile(r"[A-Za-z0-9_+\-]+")
_TABLES = ("model", "generation", "ui", "keymap", "history")
_BINDING_ID_MAX = 64
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass
class ModelConfig:
    """The ``[model]`` table: which model to open, where, and in which precision."""

    path: str = ""
    """Model folder or ``.gguf`` file opened when none is given on the command line ("": none)."""
    device: str = "auto"
    """``auto`` (the detector picks), ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``xpu``, ``xpu:N``."""
    dtype: str = "auto"
    """``auto`` (the detector's recommendation) or ``float32``, ``bfloat16``, ``float16``."""
    trust_remote_code: bool = False
    """Allow running Python code shipped inside a model folder (``auto_map``)."""


@dataclass
class HistoryConfig:
    """The ``[history]`` table: saving conversations and reopening them."""

    enabled: bool = True
    """Save every conversation in the history database (``--no-history`` turns it off for a run)."""
    resume_last: bool = True
    """At start-up, reopen the last conversation held with the same model (false: a new chat)."""


@dataclass
class Config:
    """Everything ``config.toml`` holds; every field has a safe default."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The ``[model]`` table."""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    """The ``[generation]`` table; an absent key means the model's own default."""
    theme: str = DEFAULT_THEME
    """``[ui] theme``: a registered theme's name (falls back to the default when unknown)."""
    recent_models: list[str] = field(default_factory=list)
    """``[ui] recent_models``: absolute model paths, newest first, at most 10."""
    keymap: dict[str, str] = field(default_factory=dict)
    """``[keymap]``: binding id -> comma-separated keys, e.g. ``precision = "ctrl+t,f3"``."""
    history: HistoryConfig = field(default_factory=HistoryConfig)
    """The ``[history]`` table."""


@dataclass(frozen=True)
class _Rule:
    kind: Literal["number", "integer", "text"]
    reason: str
    accepts: Callable[[Any], bool] = lambda _: True
    #: None (absent: the model's default) is allowed.
    optional: bool = True


_GENERATION_RULES: dict[str, _Rule] = {
    "temperature": _Rule("number", "must be a number >= 0", lambda v: v >= 0),
    "top_p": _Rule("number", "must be a number > 0 and <= 1", lambda v: 0 < v <= 1),
    "top_k": _Rule("integer", "must be an integer >= 0", lambda v: v >= 0),
    "max_new_tokens": _Rule("integer", "must be an integer >= 1", lambda v: v >= 1, False),
    "repetition_penalty": _Rule("number", "must be a number > 0", lambda v: v > 0),
    # numpy's seed, which transformers' set_seed also sets, takes 0 .. 2**32 - 1.
    "seed": _Rule("integer", "must be an integer from 0 to 4294967295", lambda v: 0 <= v < 2**32),
    "system_prompt": _Rule("text", "must be a string", optional=False),
}


def _convert(rule: _Rule, value: object) -> object:
    """Return ``value`` as the rule's type; ValueError(reason) when it does not fit."""
    if rule.kind == "text":
        ok = isinstance(value, str)
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        ok = False
    elif rule.kind == "integer":
        ok = isinstance(value, int) and rule.accepts(value)
    else:
        value = float(value)
        ok = math.isfinite(value) and rule.accepts(value)
    if not ok:
        raise ValueError(rule.reason)
    return value


def parse_generation_field(name: str, text: str) -> object:
    """Parse what a person typed for generation field ``name`` with the config file's rules.

    An empty text means "the model's default" (None) where that is allowed. Raises ValueError
    whose text is the reason (``must be a number >= 0``).
    """
    rule = _GENERATION_RULES[name]
    if rule.kind == "text":
        return text
    text = text.strip()
    if not text:
        if rule.optional:
            return None
        raise ValueError(rule.reason)
    try:
        number: object = int(text) if rule.kind == "integer" else float(text)
    except ValueError:
        raise ValueError(rule.reason) from None
    return _convert(rule, number)


def check_generation_value(name: str, value: object) -> object:
    """Check a parsed (JSON or TOML) value for generation field ``name`` with the same rules.

    Used for a model's own defaults; raises ValueError whose text is the reason.
    """
    return _convert(_GENERATION_RULES[name], value)


def load_config(path: Path | None = None) -> tuple[Config, list[str]]:
    """Read the config file; return the settings and one problem line per thing ignored.

    ``path`` defaults to `locations.config_file` (``$MERGECHAT_CONFIG`` overrides it). A missing
    file gives the defaults silently; an unreadable or invalid file gives the defaults and one
    problem; each invalid value falls back to that key's default with a problem naming the file,
    line (when found), key and reason. Each problem is one line (control characters escaped),
    at most `MAX_PROBLEMS` of them. Never raises for anything in the file.
    """
    path = path or locations.config_file()
    config, problems = _load(path)
    if len(problems) > MAX_PROBLEMS:
        left_out = len(problems) - MAX_PROBLEMS + 1
        problems = [*problems[: MAX_PROBLEMS - 1], f"{path}: {left_out} more problems not shown"]
    return config, [_one_line(p) for p in problems]


def _load(path: Path) -> tuple[Config, list[str]]:
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
        return Config(), [f"{where}: invalid TOML: {exc}; using the defaults"]
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
        self._unknown(doc, "", set(_TABLES))
        self._unknown(model_t, "model", {f.name for f in fields(ModelConfig)})
        self._unknown(gen_t, "generation", set(_GENERATION_RULES))
        self._unknown(ui_t, "ui", {"theme", "recent_models"})
        self._unknown(history_t, "history", {f.name for f in fields(HistoryConfig)})
        defaults = ModelConfig()
        model = ModelConfig(
            path=self._get(model_t, "model.path", _path, defaults.path),
            device=self._get(model_t, "model.device", _device, defaults.device),
            dtype=self._get(model_t, "model.dtype", _dtype_choice, defaults.dtype),
            trust_remote_code=self._get(
                model_t, "model.trust_remote_code", _boolean, defaults.trust_remote_code
            ),
        )
        base = GenerationSettings()
        generation = GenerationSettings(
            **{
                name: self._get(gen_t, f"generation.{name}", rule, getattr(base, name))
                for name, rule in _GENERATION_RULES.items()
            }
        )
        theme = self._get(ui_t, "ui.theme", _theme_name, DEFAULT_THEME)
        history_defaults = HistoryConfig()
        history = HistoryConfig(
            **{
                f.name: self._get(
                    history_t, f"history.{f.name}", _boolean, getattr(history_defaults, f.name)
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
            f"{self._where(dotted)}: {dotted}: {reason}, got {_show(value)}; {outcome}"
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
            return _convert(check, table[key]) if isinstance(check, _Rule) else check(table[key])
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
            elif len(recent) < MAX_RECENT_MODELS and (key := _model_key(item)) not in seen:
                seen.add(key)
                recent.append(item)
        return recent

    def _keymap(self, table: dict[str, Any]) -> dict[str, str]:
        keymap: dict[str, str] = {}
        for binding_id, value in _flatten(table):
            dotted = f"keymap.{binding_id}"
            if not _NAME_RE.fullmatch(binding_id):
                shown = _show(dotted)
                self.problems.append(f"{self._where(dotted)}: {shown}: not a binding id; ignored")
                continue
            try:
                keymap[binding_id] = _keys(value)
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


def _path(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if "\x00" in value:
        raise ValueError("must be a path (a NUL character cannot be in one)")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _device(value: object) -> str:
    if not isinstance(value, str) or not _DEVICE_RE.fullmatch(value.strip().lower()):
        raise ValueError("must be auto, cpu, cuda, cuda:N, mps, xpu or xpu:N")
    return value.strip().lower()


def _dtype_choice(value: object) -> str:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    dtype = normalize_dtype(value) if isinstance(value, str) else None
    if dtype is None:
        raise ValueError("must be auto, float32, bfloat16 or float16")
    return dtype


def _theme_name(value: object) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError("must be a theme name (letters, digits, '-', '_', '.')")
    return value


def _keys(value: object) -> str:
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else []
    if not parts or not all(
        _KEY_RE.fullmatch(p) or (len(p) == 1 and p.isprintable()) for p in parts
    ):
        raise ValueError('must be key names separated by commas, like "ctrl+t,f3"')
    return ",".join(parts)


def _show(value: object) -> str:
    """A short TOML-like rendering of a value for a problem line (control characters escaped)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        return shown if len(shown) <= 60 else shown[:56] + '..."'
    if isinstance(value, (int, float)):
        return repr(value)[:40]
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


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


def _one_line(text: str) -> str:
    """``text`` with control characters (newlines, escapes) shown as ``\\uXXXX``."""
    return _CONTROL_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _model_key(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(str(path))))


def remember_model(config: Config, path: str | Path) -> Config:
    """A copy of ``config`` with ``path`` (made absolute) first in the recent models (max 10)."""
    if not str(path).strip():
        return config
    entry = _model_key(path)
    others = [p for p in config.recent_models if _model_key(p) != entry]
    return replace(config, recent_models=[entry, *others][:MAX_RECENT_MODELS])


def config_to_toml(config: Config) -> str:
    """The TOML text `save_config` writes; `load_config` reads it back to an equal `Config`."""
    out = ["# mergechat settings. mergechat rewrites this file; your comments are not kept.", ""]
    out.append("[model]")
    for f in fields(ModelConfig):
        out.append(f"{f.name} = {toml_value(getattr(config.model, f.name))}")
    out += ["", "[generation]"]
    for name in _GENERATION_RULES:
        value = getattr(config.generation, name)
        if value is None:
            out.append(f"# {name} = ...  (not set: the model's default)")
        else:
            out.append(f"{name} = {toml_value(value)}")
    out += ["", "[ui]", f"theme = {toml_value(config.theme)}"]
    out.append(f"recent_models = {toml_value(list(config.recent_models))}")
    out += ["", "[history]"]
    out += [
        f"{f.name} = {toml_value(getattr(config.history, f.name))}" for f in fields(HistoryConfig)
    ]
    out += ["", "[keymap]"]
    out += [f"{toml_key(k)} = {toml_value(v)}" for k, v in config.keymap.items()]
    return "\n".join(out) + "\n"


def save_config(config: Config, path: Path | None = None) -> Path:
    """Write ``config`` as TOML, readable by the user only (0600, folder 0700), atomically.

    Returns the file written. Raises `MergechatError` when it cannot be written.
    """
    path = path or locations.config_file()
    if path.is_symlink():  # keep a dotfiles symlink intact: write where it points
        path = path.resolve()
    text = config_to_toml(config)
    temp: str | None = None
    try:
        locations.ensure_private_dir(path.parent)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, path)
        temp = None
    except OSError as exc:
        raise MergechatError(
            f"cannot save settings to {path}: {exc.strerror or exc}",
            hint=f"check the folder's permissions or set ${locations.ENV_CONFIG_FILE}",
        ) from exc
    finally:
        if temp is not None:
            Path(temp).unlink(missing_ok=True)
    return path
