"""TOML text for one key or value (problem lines, tests): tomlkit does the quoting and escaping."""

from __future__ import annotations

import re

import tomlkit

_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _clean(text: str) -> str:
    # A lone surrogate cannot be written as UTF-8: it becomes U+FFFD.
    return _SURROGATE_RE.sub("\ufffd", text)


def toml_key(key: str) -> str:
    """``key`` as written left of ``=``: bare when it may be, else quoted (so a dot stays a dot)."""
    return tomlkit.key(_clean(key)).as_string()


def toml_value(value: object) -> str:
    """A bool, int, float, str or list of them as TOML text; TypeError for anything else."""
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, (bool, int, float)):
        return tomlkit.item(value).as_string()
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    return tomlkit.string(_clean(text)).as_string()
