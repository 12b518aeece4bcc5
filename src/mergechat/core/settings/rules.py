"""The rules each ``config.toml`` value must follow: shared by the file, the settings screen and
a model's own defaults, so all three accept and reject the same values."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mergechat.core.dtypes import normalize_dtype

DEVICE_RE = re.compile(r"auto|cpu|mps|(?:cuda|xpu)(?::\d{1,3})?")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_KEY_RE = re.compile(r"[A-Za-z0-9_+\-]+")


@dataclass(frozen=True)
class Rule:
    kind: Literal["number", "integer", "text"]
    reason: str
    accepts: Callable[[Any], bool] = lambda _: True
    #: None (absent: the model's default) is allowed.
    optional: bool = True


GENERATION_RULES: dict[str, Rule] = {
    "temperature": Rule("number", "must be a number >= 0", lambda v: v >= 0),
    "top_p": Rule("number", "must be a number > 0 and <= 1", lambda v: 0 < v <= 1),
    "top_k": Rule("integer", "must be an integer >= 0", lambda v: v >= 0),
    "max_new_tokens": Rule("integer", "must be an integer >= 1", lambda v: v >= 1, False),
    "repetition_penalty": Rule("number", "must be a number > 0", lambda v: v > 0),
    # numpy's seed, which transformers' set_seed also sets, takes 0 .. 2**32 - 1.
    "seed": Rule("integer", "must be an integer from 0 to 4294967295", lambda v: 0 <= v < 2**32),
    "system_prompt": Rule("text", "must be a string", optional=False),
}


def convert(rule: Rule, value: object) -> object:
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
    """A device name, lower-cased: auto, cpu, cuda[:N], mps, xpu[:N]."""
    if not isinstance(value, str) or not DEVICE_RE.fullmatch(value.strip().lower()):
        raise ValueError("must be auto, cpu, cuda, cuda:N, mps, xpu or xpu:N")
    return value.strip().lower()


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
