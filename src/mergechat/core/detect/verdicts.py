"""One device x dtype verdict for a model: the probe's turn time combined with the memory fit."""

from __future__ import annotations

from typing import Final

from mergechat.core.detect.capabilities import (
    ChoiceVerdict,
    DeviceInfo,
    FitResult,
    ProbeResult,
    Verdict,
)
from mergechat.core.dtypes import DType
from mergechat.core.text import format_bytes

#: Ratios within this of 1.0 read as "as fast".
_SAME: Final[float] = 1.05
BUSY_TEXT: Final[str] = "not measured reliably: machine busy"
#: CPU flags that run a half type natively (named in reasons).
NATIVE_FLAGS: Final[dict[DType, tuple[str, ...]]] = {
    "bfloat16": ("amx_bf16", "avx512_bf16", "bf16"),
    "float16": ("amx_fp16", "avx512_fp16", "asimdhp"),
}


def _relative(label: str, factor: float) -> str:
    """``decode 1.3x faster`` / ``prompts 6.8x slower`` / ``decode as fast`` for a time ratio."""
    if 1 / _SAME < factor < _SAME:
        return f"{label} as fast"
    if factor < 1:
        return f"{label} {1 / factor:.1f}x faster"
    return f"{label} {factor:.1f}x slower"


def speed_text(probe: ProbeResult | None, fastest: str | None) -> str:
    """Decode and prompt speed against the device's fastest-turn dtype, e.g. ``decode 1.3x
    faster, prompts 6.8x slower (vs float32)``; empty when there is nothing to compare."""
    if probe is None or probe.decode_factor is None or probe.prefill_factor is None:
        return ""
    if fastest is None or fastest == probe.dtype:
        return "fastest per turn"
    decode = _relative("decode", probe.decode_factor)
    prompts = _relative("prompts", probe.prefill_factor)
    return f"{decode}, {prompts} (vs {fastest})"


def choice_verdict(
    device: DeviceInfo, probe: ProbeResult | None, fit: FitResult, fastest: str | None
) -> ChoiceVerdict:
    """Combine probe and fit: unsupported beats does not fit, which beats slow."""
    dtype = fit.dtype
    speed = speed_text(probe, fastest)
    if probe is None:
        return ChoiceVerdict(device.id, dtype, "unsupported", "unsupported: not probed", None, fit)
    if probe.verdict == "unsupported":
        return ChoiceVerdict(device.id, dtype, "unsupported", probe_verdict_text(probe), probe, fit)
    if fit.fits is False:
        assert fit.needed_bytes is not None and fit.free_bytes is not None
        needed, free = format_bytes(fit.needed_bytes), format_bytes(fit.free_bytes)
        text = f"does not fit: {needed} needed, {free} free"
        return ChoiceVerdict(device.id, dtype, "does not fit", text, probe, fit, speed)
    text = probe_verdict_text(probe)
    return ChoiceVerdict(device.id, dtype, probe_verdict(probe), text, probe, fit, speed)


def fastest_dtype(probes: list[ProbeResult]) -> str | None:
    """The dtype with the shortest predicted turn among ``probes`` (one device's)."""
    timed = [p for p in probes if p.seconds is not None and p.verdict != "unsupported"]
    return min(timed, key=lambda p: p.seconds or 0.0).dtype if timed else None


def probe_verdict(probe: ProbeResult) -> Verdict:
    """The verdict a probe alone gives: ``ok`` when a busy machine made its timing unreliable."""
    if probe.verdict != "unsupported" and not probe.reliable:
        return "ok"
    return probe.verdict


def probe_verdict_text(probe: ProbeResult) -> str:
    """The text of a probe's verdict (``ok``, ``slow 4.2x per turn``, ``unsupported: ...``):
    a `ChoiceVerdict`'s when the model fits, and the whole verdict when no fit is known."""
    if probe.verdict == "unsupported":
        return f"unsupported: {probe.error}" if probe.error else "unsupported"
    if not probe.reliable:
        return f"ok ({BUSY_TEXT})"
    if probe.verdict == "slow":
        return f"slow {probe.factor:.1f}x per turn" if probe.factor else "slow"
    return probe.verdict


def native_phrase(device: DeviceInfo, dtype: DType) -> str:
    """``runs natively on this CPU (avx512_bf16)`` or ``measured ok on NVIDIA A100``."""
    if device.kind == "cpu":
        flags = [f for f in NATIVE_FLAGS.get(dtype, ()) if f in device.features]
        if flags:
            return f"runs natively on this CPU ({', '.join(flags)})"
        return "measured ok on this CPU"
    if dtype == "bfloat16" and device.bf16_native:
        return f"runs natively on {device.id} ({device.name})"
    return f"measured ok on {device.id} ({device.name})"


def where(device: DeviceInfo) -> str:
    return "this CPU" if device.kind == "cpu" else device.id


def problem_clause(v: ChoiceVerdict) -> str:
    """``is slow (4.2x)``, ``is unsupported``, ``does not fit``: the verdict as a clause."""
    if v.verdict == "slow":
        factor = v.probe.factor if v.probe is not None else None
        return f"is slow ({factor:.1f}x)" if factor else "is slow"
    return "does not fit" if v.verdict == "does not fit" else "is unsupported"
