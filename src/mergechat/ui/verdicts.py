"""Per-precision verdict lines for the precision menu, from the detector's latest results."""

from __future__ import annotations

from mergechat.core.api import CapabilitiesReady, MeasuredSpeed, ModelState
from mergechat.core.detect.verdicts import probe_verdict_text
from mergechat.core.dtypes import DTYPES, DType

#: Shown for a precision the detector has not reported on (yet).
UNKNOWN = "not measured yet"


def device_id(label: str) -> str:
    """The first device of a `ModelState.device` label (``cuda:0+cpu offload`` -> ``cuda:0``)."""
    return label.split("+", 1)[0].split(",", 1)[0].strip()


def measured_text(speed: MeasuredSpeed) -> str:
    """``measured on this model: decode 14 tok/s, prompts 170 tok/s (predicted 12 and 150)``."""
    text = (
        f"measured on this model: decode {speed.decode_tokens_per_s:,.0f} tok/s, prompts "
        f"{speed.prefill_tokens_per_s:,.0f} tok/s"
    )
    decode, prefill = speed.predicted_decode_tokens_per_s, speed.predicted_prefill_tokens_per_s
    if decode is not None and prefill is not None:
        text += f" (predicted {decode:,.0f} and {prefill:,.0f})"
    return text


def faster_text(speed: MeasuredSpeed, key: str) -> str | None:
    """The once-per-model note that another safe precision makes turns clearly faster."""
    if speed.faster_dtype is None or speed.faster_by is None:
        return None
    return (
        f"{speed.faster_dtype} would make chat turns about {speed.faster_by:.1f}x faster on this "
        f"machine (from this model's measured speed); press {key} to switch precision"
    )


def precision_verdicts(
    ready: CapabilitiesReady | None, device_label: str, state: ModelState | None = None
) -> dict[DType, str]:
    """One short verdict per precision on the model's device (assessment first, then probes);
    the loaded precision also shows what was measured on the model itself."""
    device = device_id(device_label)
    verdicts: dict[DType, str] = {}
    for dtype in DTYPES:
        text = UNKNOWN
        if ready is not None:
            choice = ready.assessment.verdict(device, dtype) if ready.assessment else None
            probe = ready.capabilities.probe(device, dtype)
            if choice is not None:
                text = f"{choice.text} · {choice.speed}" if choice.speed else choice.text
            elif probe is not None:
                text = probe_verdict_text(probe)
        if state is not None and state.dtype == dtype and state.speed is not None:
            text = (
                f"{text} · {measured_text(state.speed)}"
                if text != UNKNOWN
                else measured_text(state.speed)
            )
        verdicts[dtype] = text
    return verdicts
