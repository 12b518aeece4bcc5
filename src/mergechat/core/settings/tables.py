"""The typed tables of ``config.toml``, with their defaults (read by `config_read`, written by
`config`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mergechat.core.settings.generation import GenerationSettings

DEFAULT_THEME = "mergechat-dark"


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
    """Absolute model paths, newest first, at most 10: kept in the state file (`recent_models`),
    never written here; the ``[ui] recent_models`` of older files is still read."""
    keymap: dict[str, str] = field(default_factory=dict)
    """``[keymap]``: binding id -> comma-separated keys, e.g. ``precision = "ctrl+t,f3"``."""
    history: HistoryConfig = field(default_factory=HistoryConfig)
    """The ``[history]`` table."""
