"""The capability detector's data: devices, per device x dtype probe verdicts, memory fit.

The functions that fill these live in `devices`, `probe` and `policy`; this module only holds the
shapes every consumer (engine, CLI doctor, settings screen) shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mergechat.core.dtypes import DType

if TYPE_CHECKING:
    from mergechat.core.detect.probe_shape import ProbeShape

Verdict = Literal["ok", "slow", "unsupported", "does not fit"]
#: Verdicts that rule a choice out (the others only warn).
BLOCKING_VERDICTS: frozenset[Verdict] = frozenset({"unsupported", "does not fit"})
DeviceKind = Literal["cpu", "cuda", "mps", "xpu"]


@dataclass(frozen=True)
class DeviceInfo:
    """One compute device and what is known about it."""

    #: ``cpu``, ``cuda:0``, ``mps``, ``xpu:0``.
    id: str
    kind: DeviceKind
    name: str
    total_bytes: int | None
    free_bytes: int | None
    #: CPU ISA flags that matter for low precision (``avx512_bf16``, ``amx_bf16`` ...) or notes.
    features: tuple[str, ...] = ()
    cores: int | None = None
    #: CUDA compute capability, e.g. (8, 0).
    compute_capability: tuple[int, int] | None = None
    #: True when bfloat16 runs natively (no emulation); None when unknown.
    bf16_native: bool | None = None


@dataclass(frozen=True)
class ProbeResult:
    """A real probe of one dtype on one device with the model's shapes, as a typical chat turn.

    ``seconds`` is the predicted time of one turn (`probe_shape.TURN_PROMPT_TOKENS` of prompt
    prefilled plus `probe_shape.TURN_NEW_TOKENS` decoded); ``decode_s`` and ``prefill_s`` are the
    predicted seconds per decoded and per prompt token of the whole model.
    """

    device: str
    dtype: DType
    verdict: Verdict
    #: Predicted seconds of a typical turn (None when it failed).
    seconds: float | None
    #: Turn time against the fastest dtype on the same device (1.0 for the fastest).
    factor: float | None = None
    #: The error text when unsupported (e.g. ``"addmm_impl_cpu_" not implemented for 'Half'``).
    error: str | None = None
    decode_s: float | None = None
    prefill_s: float | None = None
    #: Decode and prompt time per token against the device's fastest-turn dtype.
    decode_factor: float | None = None
    prefill_factor: float | None = None
    #: False when other programs kept the machine busy through every round: the times are shown
    #: but never move a model away from its own precision.
    reliable: bool = True


@dataclass(frozen=True)
class Capabilities:
    """Everything the detector measured on this machine (for one model shape)."""

    devices: tuple[DeviceInfo, ...]
    probes: tuple[ProbeResult, ...]
    torch_version: str
    #: Wall time the probes took when measured (not when read from cache).
    probe_seconds: float
    from_cache: bool = False
    #: The shapes probed: the model's own layers, or a generic layer when no model was given.
    shape: ProbeShape | None = None
    #: Average cores other programs used during the probe (None when unknown or cached).
    busy_cores: float | None = None

    @property
    def reliable(self) -> bool:
        """False when some device's timings were disturbed by other busy programs."""
        return all(p.reliable for p in self.probes)

    def device(self, device_id: str) -> DeviceInfo | None:
        """The device with this id, if present."""
        return next((d for d in self.devices if d.id == device_id), None)

    def probe(self, device_id: str, dtype: DType) -> ProbeResult | None:
        """The probe of ``dtype`` on ``device_id``, if measured."""
        return next((p for p in self.probes if p.device == device_id and p.dtype == dtype), None)


@dataclass(frozen=True)
class FitResult:
    """Whether a model's weights plus KV cache fit in a device's free memory in a dtype."""

    device: str
    dtype: DType
    needed_bytes: int | None
    free_bytes: int | None
    fits: bool | None


@dataclass(frozen=True)
class ChoiceVerdict:
    """The verdict for one device x dtype choice for a given model (probe + memory fit)."""

    device: str
    dtype: DType
    verdict: Verdict
    #: Short human text: ``ok``, ``slow 4.2x``, ``unsupported: ...``, ``does not fit: 9.1 GiB
    #: needed, 3.2 GiB free``.
    text: str
    probe: ProbeResult | None = None
    fit: FitResult | None = None
    #: Decode and prompt speed against the device's fastest dtype (``decode 1.3x faster,
    #: prompts 6.8x slower (vs float32)``), empty when not measured.
    speed: str = ""


@dataclass(frozen=True)
class Recommendation:
    """Where and in which precision to load a model, and why."""

    device: str
    dtype: DType
    #: ``None`` for a plain ``.to(device)``; ``"auto"`` to spread/offload with accelerate.
    device_map: str | None
    reason: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Assessment:
    """The detector's view of one model on this machine."""

    verdicts: tuple[ChoiceVerdict, ...]
    recommendation: Recommendation
    warnings: tuple[str, ...] = field(default_factory=tuple)
    #: Dtypes that hold the model's values: its own, wider ones, float16 when measured to fit.
    safe_dtypes: tuple[DType, ...] = ()

    def verdict(self, device_id: str, dtype: DType) -> ChoiceVerdict | None:
        """The verdict for one choice, if assessed."""
        return next((v for v in self.verdicts if v.device == device_id and v.dtype == dtype), None)
