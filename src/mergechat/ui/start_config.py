"""The app's start-up values: the config file with the command line's flags on top."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from mergechat.core.api import LoadRequest
from mergechat.core.dtypes import parse_dtype_choice
from mergechat.core.settings.config import Config
from mergechat.core.settings.generation import GenerationSettings
from mergechat.ui.options import AppOptions

_GENERATION_FIELDS = frozenset(f.name for f in fields(GenerationSettings))


def effective_config(config: Config, options: AppOptions) -> tuple[Config, list[str]]:
    """``config`` with the flags of ``options`` applied (for this run only), and any problems."""
    problems: list[str] = []
    model = config.model
    if options.model_path is not None:
        model = replace(model, path=str(options.model_path))
    if options.device:
        model = replace(model, device=options.device)
    if options.dtype:
        try:
            model = replace(model, dtype=parse_dtype_choice(options.dtype))
        except ValueError as error:  # the load would quietly use auto: say so
            problems.append(f"{error}; using {model.dtype}")
    if options.trust_remote_code:
        model = replace(model, trust_remote_code=True)
    overrides: dict[str, Any] = {
        k: v for k, v in options.generation_overrides.items() if k in _GENERATION_FIELDS
    }
    problems += [
        f"unknown generation setting {k!r} ignored"
        for k in options.generation_overrides
        if k not in _GENERATION_FIELDS
    ]
    generation = replace(config.generation, **overrides)
    return replace(config, model=model, generation=generation), problems


def load_request(config: Config) -> LoadRequest:
    """The load request for the model in ``config`` (an invalid dtype falls back to auto)."""
    try:
        dtype = parse_dtype_choice(config.model.dtype)
    except ValueError:
        dtype = "auto"
    return LoadRequest(
        path=Path(config.model.path).expanduser(),
        device=config.model.device or "auto",
        dtype=dtype,
        trust_remote_code=config.model.trust_remote_code,
    )
