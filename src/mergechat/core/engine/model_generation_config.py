"""A model folder's generation_config.json as ``from_pretrained`` arguments, bad keys dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mergechat.core.settings.model_defaults import ModelDefaults, read_model_defaults
from mergechat.core.visible import escape_control


def generation_config_kwargs(folder: Path) -> tuple[dict[str, Any], str | None]:
    """``from_pretrained`` keyword arguments that replace unusable defaults, and the warning.

    Empty when the file is absent or fully usable (transformers reads it itself, as before).
    """
    from transformers import GenerationConfig  # imported with the weights, not before

    defaults = read_model_defaults(folder)
    if defaults is None:
        return {}, None
    try:
        config = GenerationConfig.from_dict(dict(defaults.values or {}))
    except (TypeError, ValueError) as exc:
        text = escape_control(" ".join(str(exc).split()))
        reason = "transformers rejects it: " + text[:160]
        defaults = ModelDefaults(None, unusable=reason)
        config = GenerationConfig.from_dict({})
    warning = defaults.warning
    return ({"generation_config": config}, warning) if warning else ({}, None)
