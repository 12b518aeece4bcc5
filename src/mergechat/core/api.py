"""The engine's public contract: requests in, events out. Plain data, no torch, no Textual.

The UI and the CLI only ever see these types; the engine thread builds them. Every event is an
immutable dataclass so it can cross threads safely (the UI wraps them in Textual messages).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from mergechat.core.dtypes import DType
from mergechat.core.settings.generation import GenerationSettings

if TYPE_CHECKING:
    from mergechat.core.detect.capabilities import Assessment, Capabilities
    from mergechat.core.streaming import ReplyStream

Role = Literal["system", "user", "assistant"]
LoadStage = Literal["inspecting", "probing", "reading", "loading", "casting", "warm-up"]
FinishReason = Literal["complete", "stopped", "length"]


@dataclass(frozen=True)
class ChatMessage:
    """One turn of the conversation as the model sees it."""

    role: Role
    content: str


@dataclass(frozen=True)
class LoadRequest:
    """What to load: a model folder or ``.gguf`` file, where, and in which precision."""

    path: Path
    #: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``xpu``.
    device: str = "auto"
    #: ``auto`` or one of `DTYPES`.
    dtype: DType | Literal["auto"] = "auto"
    trust_remote_code: bool = False
    #: Context length assumed for the memory-fit check (None: the model's maximum, capped).
    context_tokens: int | None = None


@dataclass(frozen=True)
class MeasuredSpeed:
    """The loaded model's own speed, timed after a load or switch, beside the probe's prediction."""

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    predicted_prefill_tokens_per_s: float | None = None
    predicted_decode_tokens_per_s: float | None = None
    #: A safe precision predicted (and corrected by this measurement) to make turns faster.
    faster_dtype: DType | None = None
    faster_by: float | None = None
    #: True the first time ``faster_dtype`` is pointed out for this model on this machine.
    say_faster: bool = False


@dataclass(frozen=True)
class ModelState:
    """What is loaded right now, read from the model itself after load or switch."""

    path: Path
    name: str
    #: Label for display only: ``cpu``, ``cuda:0``, ``cuda:0+cpu offload``, ``cuda:0,cuda:1``.
    device: str
    #: The dtype of the weights as read from the model's parameters, not the request.
    dtype: DType
    #: The dtype the weights have on disk (float32 for a dequantised GGUF file).
    disk_dtype: DType
    context_max: int
    #: Loaded with a device map that spreads or offloads weights (cannot be cast in memory).
    offloaded: bool = False
    merge_method: str | None = None
    #: True when the model had no chat template and a fallback (ChatML) is used.
    fallback_template: bool = False
    #: Why this device and dtype were chosen (the detector's reason or "chosen by the user").
    reason: str = ""
    #: Measured on this model after the load or the last switch (None when not measured).
    speed: MeasuredSpeed | None = None
    #: The detected device holding the weights (the first one when spread), as `DeviceInfo.id`
    #: names it (``cpu``, ``cuda:0``, ``mps``); None when no local device does (a served model).
    device_id: str | None = None


@dataclass(frozen=True)
class ReplyStats:
    """Measures of one reply."""

    prompt_tokens: int
    new_tokens: int
    #: Seconds from the request to the first new token.
    ttft_s: float
    #: Seconds from the request to the last token.
    total_s: float
    #: New tokens after the first, per second of decode time.
    decode_tokens_per_s: float
    context_used: int
    context_max: int
    dtype: DType
    device: str
    #: Prompt tokens taken from the previous turn's KV cache instead of prefilled again.
    cached_tokens: int = 0


class EngineEvent:
    """Base of everything the engine reports."""

    __slots__ = ()


@dataclass(frozen=True)
class LoadProgress(EngineEvent):
    """A load step; ``fraction`` is 0..1 over the whole load."""

    stage: LoadStage
    fraction: float
    detail: str = ""


@dataclass(frozen=True)
class ModelLoaded(EngineEvent):
    state: ModelState
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadFailed(EngineEvent):
    message: str
    hint: str | None = None
    #: The model that is still loaded, if a previous one was kept.
    state: ModelState | None = None
    #: The process exit status the error maps to: 2 for bad input (a broken folder, an unknown
    #: architecture), 1 for a failure of the machine or the library.
    exit_code: int = 1


@dataclass(frozen=True)
class ReplyStarted(EngineEvent):
    request_id: int
    #: Thread-safe buffer of new token ids; the consumer decodes it in batches.
    stream: ReplyStream
    prompt_tokens: int
    context_max: int
    #: Older messages dropped to fit the context window (0 when none were).
    dropped_messages: int = 0


@dataclass(frozen=True)
class ReplyFinished(EngineEvent):
    request_id: int
    text: str
    stats: ReplyStats
    finish: FinishReason


@dataclass(frozen=True)
class ReplyFailed(EngineEvent):
    request_id: int
    message: str
    partial_text: str = ""
    hint: str | None = None


@dataclass(frozen=True)
class FidelityReport:
    """How closely ``target`` reproduces ``reference`` on `PROBE_TEXT`."""

    reference: DType
    target: DType
    positions: int
    #: Fraction (0..1) of positions whose top-1 next token is the same in both precisions.
    top1_agreement: float
    max_abs_logit_diff: float

    def summary(self) -> str:
        """One line for a notification, e.g. ``float32 vs bfloat16: 97.1% top-1 agreement``."""
        return (
            f"{self.target} vs {self.reference}: {self.top1_agreement * 100:.1f}% top-1 "
            f"agreement over {self.positions} tokens, max logit diff {self.max_abs_logit_diff:.3g}"
        )


@dataclass(frozen=True)
class SwitchStarted(EngineEvent):
    source: DType
    target: DType
    method: Literal["cast", "reload"]


@dataclass(frozen=True)
class SwitchFinished(EngineEvent):
    state: ModelState
    method: Literal["cast", "reload"]
    seconds: float
    fidelity: FidelityReport | None = None


@dataclass(frozen=True)
class SwitchFailed(EngineEvent):
    message: str
    #: The state the model is in after the failure (the previous precision).
    state: ModelState | None
    hint: str | None = None


@dataclass(frozen=True)
class CapabilitiesReady(EngineEvent):
    """Detector results; ``assessment`` is set when a model path was given."""

    capabilities: Capabilities
    assessment: Assessment | None = None


@dataclass(frozen=True)
class EngineNotice(EngineEvent):
    """A warning or information line meant for the user."""

    message: str
    level: Literal["info", "warning", "error"] = "warning"


@dataclass(frozen=True)
class EngineCrashed(EngineEvent):
    """The engine process died (segfault, CUDA abort, OOM kill): its model is gone.

    Sent after a `ReplyFailed` for each reply it left open; the next command starts a new one.
    """

    message: str
    #: The engine's output file, where a crash leaves its traceback.
    log: str = ""


@dataclass(frozen=True)
class AgreementScored(EngineEvent):
    """The answer to ``score_agreement``: top-1 agreement with a reference reply (one forward
    pass), or ``message`` saying why it was not measured."""

    request_id: int
    matched: int = 0
    tokens: int = 0
    #: The first reference token the model would not have picked (None: all agree, or no score).
    first_miss: int | None = None
    message: str | None = None

    @property
    def score(self) -> float | None:
        """``matched / tokens``, None when not measured or the reference is empty."""
        return self.matched / self.tokens if self.tokens and self.message is None else None


EventSink = Callable[[EngineEvent], None]


class EngineClient(Protocol):
    """What the UI and CLI may call; implemented by `Engine` and by test fakes.

    Every method returns at once (it queues a command); results come back as events.
    """

    def start(self) -> None: ...

    def load(self, request: LoadRequest) -> None: ...

    def generate(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        *,
        continue_last: bool = False,
    ) -> int: ...

    def cancel(self) -> None: ...

    def switch_dtype(self, dtype: DType) -> None: ...

    def detect(self, model_path: Path | None = None, device: str = "auto") -> None: ...

    def score_agreement(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        reference: str,
        *,
        reference_ids: Sequence[int] | None = None,
    ) -> int: ...

    def shutdown(self, timeout: float = 5.0) -> None: ...
