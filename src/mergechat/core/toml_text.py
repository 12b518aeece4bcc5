"""A small TOML writer for the value types mergechat's config holds (the stdlib only reads)."""

from __future__ import annotations

import re

_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_\-]+")


def toml_key(key: str) -> str:
    """``key`` as written left of ``=``: bare when it may be, else quoted (so a dot stays a dot)."""
    return key if _BARE_KEY_RE.fullmatch(key) else toml_string(key)


def toml_value(value: object) -> str:
    """A bool, int, float, str or list of them as TOML text; TypeError for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # repr gives valid TOML: 0.7, 1e-05, inf, nan
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate cannot be encoded: replace it
            out.append("\ufffd")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
