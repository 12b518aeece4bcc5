"""What a comparison reports while it runs (for a view) and what each model produced."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mergechat.core.api import FinishReason, ModelState, ReplyStats
from mergechat.core.compare.divergence import Divergence
from mergechat.core.compare.placement import Placement
from mergechat.core.compare.plan import CompareModel

Phase = Literal[
    "waiting",
    "detecting",
    "loading",
    "loaded",
    "answering",
    "scoring",
    "switching",
    "done",
    "failed",
    "unloaded",
    "stopped",
]


@dataclass(frozen=True)
class ModelResult:
    """One model's answer to the prompt, its stats and how close it is to the merge."""

    index: int
    model: CompareModel
    #: What was loaded (None when the load failed or never ran).
    state: ModelState | None = None
    reply: str = ""
    stats: ReplyStats | None = None
    finish: FinishReason | None = None
    #: Why the model could not answer (failed inspection, load or reply); the others still did.
    error: str | None = None
    #: Seconds its last load took (None: loaded before this prompt, or a failure).
    load_s: float | None = None
    #: Seconds its unload after answering took (one at a time: the memory is free again).
    unload_s: float | None = None
    #: Where its reply first parts from the base model's (None for the base and failures).
    divergence: Divergence | None = None
    #: Teacher-forced top-1 agreement with the merge's reply, 0..1 (None: not measured).
    agreement: float | None = None
    #: Why there is no agreement score (a served model, a failed merge reply...).
    agreement_note: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ComparePlaced:
    """The placement is decided (before any load): together or one at a time, and why."""

    placement: Placement


@dataclass(frozen=True)
class ComparePhase:
    """Model ``index`` moved to ``phase``; ``fraction`` (0..1) during a load; ``state`` the
    loaded model on a "loaded" phase (its device and precision travel as data, not text)."""

    index: int
    phase: Phase
    detail: str = ""
    fraction: float | None = None
    state: ModelState | None = None


@dataclass(frozen=True)
class CompareText:
    """More reply text for model ``index`` (append it)."""

    index: int
    delta: str


@dataclass(frozen=True)
class CompareNote:
    """A warning or note for model ``index`` (a load warning, an engine notice)."""

    index: int
    message: str


@dataclass(frozen=True)
class CompareSwitched:
    """A precision switch of model ``index`` ended. ``state`` is the loaded model after it
    (None: not loaded now, the precision applies at its next load); ``error`` says why the
    switch did not happen (the model then keeps ``state``)."""

    index: int
    state: ModelState | None
    error: str | None = None


@dataclass(frozen=True)
class CompareModelDone:
    """Model ``index`` finished this prompt (reply, stats, and agreement when measured)."""

    result: ModelResult


@dataclass(frozen=True)
class CompareFinished:
    """Every model has answered (or failed, or was stopped) this prompt."""

    results: tuple[ModelResult, ...]
    #: Seconds from the prompt to the last model's end, loads included.
    wall_s: float
    stopped: bool = False


CompareEvent = (
    ComparePlaced
    | ComparePhase
    | CompareText
    | CompareNote
    | CompareSwitched
    | CompareModelDone
    | CompareFinished
)
CompareSink = Callable[[CompareEvent], None]
