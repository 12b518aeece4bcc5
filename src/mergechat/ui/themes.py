"""Theme files (TOML) read as untrusted input and registered with Textual's theme system."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from textual.app import App
from textual.color import Color, ColorParseError
from textual.theme import Theme

from mergechat.core.settings import locations
from mergechat.core.settings.config import DEFAULT_THEME

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: The theme used when the configured one is unknown or failed to load.
FALLBACK_THEME = "textual-dark"
MAX_THEME_BYTES = 64 * 1024
COLOR_FIELDS = (
    "primary",
    "secondary",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
    "success",
    "warning",
    "error",
)
_KNOWN = {"name", "dark", "luminosity_spread", "text_alpha", "variables", *COLOR_FIELDS}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_VARIABLE_RE = re.compile(r"[a-z][a-z0-9\-]{0,63}")
_WITH_ALPHA_RE = re.compile(r"(.+?)(?:\s+(\d{1,3})%)?")
# Text-style words Textual accepts in a ``*-text-style`` variable.
_STYLE_WORDS = frozenset(
    {"none", "not", "bold", "b", "dim", "d", "italic", "i", "underline", "u", "underline2", "uu"}
    | {"blink", "blink2", "reverse", "r", "strike", "s", "overline", "o"}
)


class ThemeFileError(ValueError):
    """One theme file is unusable; the text says why."""


def load_theme_files(dirs: Sequence[Path]) -> tuple[list[Theme], list[str]]:
    """Read every ``*.toml`` in ``dirs`` (in order) as a theme; later files override a name.

    Returns the themes and one problem line per bad file (the file is skipped). Missing
    folders are fine; nothing in a file can make this raise.
    """
    themes: dict[str, Theme] = {}
    problems: list[str] = []
    for folder in dirs:
        try:
            files = sorted(folder.glob("*.toml")) if folder.is_dir() else []
        except OSError as exc:
            problems.append(f"{folder}: cannot list theme files ({exc.strerror or exc})")
            continue
        seen_here: set[str] = set()
        for file in files:
            try:
                theme = read_theme_file(file)
            except ThemeFileError as exc:
                problems.append(f"{file}: {exc}; theme skipped")
                continue
            if theme.name in seen_here:
                problems.append(f"{file}: theme {theme.name!r} is defined twice here; skipped")
                continue
            seen_here.add(theme.name)
            themes[theme.name] = theme
    return list(themes.values()), problems


def read_theme_file(file: Path) -> Theme:
    """Parse and validate one theme file; raises `ThemeFileError` naming what is wrong."""
    try:
        if file.stat().st_size > MAX_THEME_BYTES:
            raise ThemeFileError(f"larger than {MAX_THEME_BYTES // 1024} KiB")
        data = tomllib.loads(file.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ThemeFileError(f"cannot read it ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ThemeFileError("not UTF-8 text") from exc
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ThemeFileError(f"invalid TOML: {exc}") from exc
    return theme_from_mapping(data)


def theme_from_mapping(data: dict[str, Any]) -> Theme:
    """Build a `Theme` from a parsed theme file; raises `ThemeFileError` on any bad field."""
    errors = [f"unknown key {key!r}" for key in data if key not in _KNOWN]
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        errors.append("'name' must be a name of letters, digits, '-', '_', '.'")
    if "primary" not in data:
        errors.append("'primary' colour is missing")
    colors: dict[str, str] = {}
    for key in COLOR_FIELDS:
        if key in data:
            if _is_color(data[key]):
                colors[key] = data[key]
            else:
                errors.append(f"{key!r}: not a colour: {_short(data[key])}")
    dark = data.get("dark", True)
    if not isinstance(dark, bool):
        errors.append("'dark' must be true or false")
    numbers: dict[str, float] = {}
    for key in ("luminosity_spread", "text_alpha"):
        if key in data:
            value = data[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value <= 1
            ):
                errors.append(f"{key!r} must be a number from 0 to 1")
            else:
                numbers[key] = float(value)
    variables = _variables(data.get("variables", {}), errors)
    if errors:
        raise ThemeFileError("; ".join(errors[:3]) + ("; ..." if len(errors) > 3 else ""))
    assert isinstance(name, str)
    theme = Theme(
        name=name,
        primary=colors["primary"],
        secondary=colors.get("secondary"),
        warning=colors.get("warning"),
        error=colors.get("error"),
        success=colors.get("success"),
        accent=colors.get("accent"),
        foreground=colors.get("foreground"),
        background=colors.get("background"),
        surface=colors.get("surface"),
        panel=colors.get("panel"),
        boost=colors.get("boost"),
        dark=bool(dark),
        luminosity_spread=numbers.get("luminosity_spread", 0.15),
        text_alpha=numbers.get("text_alpha", 0.95),
        variables=variables,
    )
    try:
        theme.to_color_system().generate()  # proves Textual can derive every shade from it
    except Exception as exc:  # untrusted input: any failure means "skip this file"
        raise ThemeFileError(f"Textual cannot use it: {exc}") from exc
    return theme


def _variables(table: object, errors: list[str]) -> dict[str, str]:
    # Variables are pasted into CSS; only accept colours and style words, never arbitrary text.
    if not isinstance(table, dict):
        errors.append("'variables' must be a table")
        return {}
    variables: dict[str, str] = {}
    for key, value in table.items():
        if not _VARIABLE_RE.fullmatch(key):
            errors.append(f"variables: {_short(key)} is not a variable name")
        elif not isinstance(value, str) or not (_is_style(value) or _is_color(value, alpha=True)):
            errors.append(f"variables.{key}: not a colour or text style: {_short(value)}")
        else:
            variables[key] = value.strip()
    return variables


def _is_color(value: object, *, alpha: bool = False) -> bool:
    """True for a colour Textual parses, optionally followed by an opacity like ``50%``."""
    if not isinstance(value, str) or len(value) > 64:
        return False
    match = _WITH_ALPHA_RE.fullmatch(value.strip()) if alpha else None
    color, percent = (match.group(1), match.group(2)) if match else (value.strip(), None)
    if percent is not None and int(percent) > 100:
        return False
    if alpha and color == "auto":
        return True
    try:
        Color.parse(color)
    except ColorParseError:
        return False
    return True


def _is_style(value: str) -> bool:
    words = value.split()
    return 0 < len(words) <= 6 and all(word in _STYLE_WORDS for word in words)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def register_themes(app: App[Any]) -> list[str]:
    """Register the shipped themes, then the user's (which may override them) with ``app``.

    Returns one problem line per theme file that was skipped; show them once.
    """
    themes, problems = load_theme_files(
        [locations.builtin_themes_dir(), locations.user_themes_dir()]
    )
    for theme in themes:
        app.register_theme(theme)
    return problems


def resolve_theme_name(available: Iterable[str], wanted: str) -> tuple[str, str | None]:
    """The theme to use for ``wanted``: itself when registered, else a fallback and a problem."""
    names = set(available)
    if wanted in names:
        return wanted, None
    fallback = DEFAULT_THEME if DEFAULT_THEME in names else FALLBACK_THEME
    return fallback, f"theme {wanted!r} is not available; using {fallback!r}"
