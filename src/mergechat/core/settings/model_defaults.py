"""A model's own generation defaults (``generation_config.json``), invalid values left out.

transformers refuses to load a model whose file holds ``max_new_tokens: -5`` and fails mid-reply
on ``temperature: "hot"``; mergechat drops such keys with one warning instead, checking each with
the rules of its own settings, so the user's flags and settings still decide.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergechat.core.settings.config import check_generation_value

FILE_NAME = "generation_config.json"
#: The keys mergechat has settings for, checked with the settings' own rules.
_SETTINGS = ("temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty")


@dataclass(frozen=True)
class ModelDefaults:
    """What a model folder's generation_config.json says, and what of it is unusable."""

    #: The usable keys (None when the whole file is ignored).
    values: dict[str, Any] | None
    #: One ``key = value (reason)`` text per ignored key.
    invalid: tuple[str, ...] = ()
    #: Why the whole file is ignored (not JSON, not an object, rejected by transformers).
    unusable: str | None = None

    @property
    def warning(self) -> str | None:
        """The one warning line to show, or None when everything in the file is usable."""
        if self.unusable is not None:
            return f"ignoring the model's {FILE_NAME} ({self.unusable}); mergechat's defaults apply"
        if self.invalid:
            return (
                f"ignoring invalid defaults in the model's {FILE_NAME}: {', '.join(self.invalid)}; "
                "your settings or mergechat's defaults apply"
            )
        return None


def read_model_defaults(folder: Path) -> ModelDefaults | None:
    """Read and check ``folder``'s generation_config.json; None when there is none."""
    path = folder / FILE_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        reason = "not valid JSON" if isinstance(exc, ValueError) else "cannot be read"
        return ModelDefaults(None, unusable=reason)
    if not isinstance(data, dict):
        return ModelDefaults(None, unusable="not a JSON object")
    values = dict(data)
    invalid: list[str] = []
    for key in _SETTINGS:
        if key in values and values[key] is not None:
            try:
                check_generation_value(key, values[key])
            except ValueError as exc:
                invalid.append(f"{key} = {_shown(values.pop(key))} ({exc})")
    for key, ok in (("do_sample", _is_bool), ("min_new_tokens", _is_count)):
        if key in values and values[key] is not None and not ok(values[key]):
            invalid.append(f"{key} = {_shown(values.pop(key))} ({_REASONS[key]})")
    if values.get("do_sample") is True and values.get("temperature") == 0:
        values["do_sample"] = False  # temperature 0 means greedy, as in mergechat's settings
    return ModelDefaults(values, tuple(invalid))


def describe(folder: Path) -> str:
    """doctor's "Generation config" row: whether the file's defaults apply, and what is ignored."""
    defaults = read_model_defaults(folder)
    if defaults is None:
        return "none"
    if defaults.unusable is not None:
        return f"ignored ({defaults.unusable}); mergechat's defaults apply"
    if defaults.invalid:
        return f"{FILE_NAME}; invalid keys ignored: {', '.join(defaults.invalid)}"
    return "yes (its defaults apply)"


_REASONS = {"do_sample": "must be true or false", "min_new_tokens": "must be an integer >= 0"}


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shown(value: object) -> str:
    """The value as JSON, escaped (no control characters) and short."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
