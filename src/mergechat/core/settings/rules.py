"""The rules each ``config.toml`` value must follow: shared by the file, the settings screen and
a model's own defaults, so all three accept and reject the same values."""

from __future__ import annotations

import contextlib
import json
import re

from mergechat.core.dtypes import normalize_dtype
from mergechat.core.settings.device_choice import DEVICE_FORMS, DeviceChoice
from mergechat.core.settings.generation import BOUNDS, Bound

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_KEY_RE = re.compile(r"[A-Za-z0-9_+\-]+")


#: The generation fields' rules: declared on `GenerationSettings` (its fields' `Bound`).
GENERATION_RULES: dict[str, Bound] = BOUNDS


def convert(rule: Bound, value: object) -> object:
    """Return ``value`` as the rule's type; ValueError(reason) when it does not fit."""
    if rule.kind == "text":
        ok = isinstance(value, str)
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        ok = False
    elif rule.kind == "integer":
        ok = isinstance(value, int) and rule.accepts(value)
    else:
        value = float(value)
        ok = rule.accepts(value)
    if not ok:
        raise ValueError(rule.reason)
    return value


def parse_generation_field(name: str, text: str) -> object:
    """Parse what a person typed for generation field ``name`` with the config file's rules.

    An empty text means "the model's default" (None) where that is allowed. Raises ValueError
    whose text is the reason (``must be a number >= 0``).
    """
    rule = GENERATION_RULES[name]
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
    return convert(rule, number)


def check_generation_value(name: str, value: object) -> object:
    """Check a parsed (JSON or TOML) value for generation field ``name`` with the same rules.

    Used for a model's own defaults; raises ValueError whose text is the reason.
    """
    return convert(GENERATION_RULES[name], value)


def path_value(value: object) -> str:
    """A path string (no NUL); ValueError(reason) otherwise."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if "\x00" in value:
        raise ValueError("must be a path (a NUL character cannot be in one)")
    return value


def boolean_value(value: object) -> bool:
    """true or false, nothing else (no 0/1, no "yes")."""
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def device(value: object) -> str:
    """A device name in its canonical form: auto, cpu, cuda[:N], mps, xpu[:N]."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return str(DeviceChoice.parse(value))
    raise ValueError(f"must be {DEVICE_FORMS}")


def dtype_choice(value: object) -> str:
    """``auto`` or a precision name normalised (``bf16`` -> ``bfloat16``)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    dtype = normalize_dtype(value) if isinstance(value, str) else None
    if dtype is None:
        raise ValueError("must be auto, float32, bfloat16 or float16")
    return dtype


def theme_name(value: object) -> str:
    """A theme name; whether it exists is checked when themes are registered."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValueError("must be a theme name (letters, digits, '-', '_', '.')")
    return value


def keys_value(value: object) -> str:
    """Comma-separated key names, spaces removed: ``"ctrl+t, f3"`` -> ``"ctrl+t,f3"``."""
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else []
    if not parts or not all(
        _KEY_RE.fullmatch(p) or (len(p) == 1 and p.isprintable()) for p in parts
    ):
        raise ValueError('must be key names separated by commas, like "ctrl+t,f3"')
    return ",".join(parts)


def show_value(value: object) -> str:
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
