"""`AppOptions`: what the command line hands to the app (flags override the config file)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class AppOptions:
    """Start-up values for the app; None (or an absent key) means "take it from the config"."""

    model_path: Path | None = None
    device: str | None = None
    dtype: str | None = None
    #: GenerationSettings field names given on the command line, with their values.
    generation_overrides: Mapping[str, object] = field(default_factory=dict)
    trust_remote_code: bool = False
    debug: bool = False
    #: Save nothing in the conversation history during this run (``--no-history``).
    no_history: bool = False
