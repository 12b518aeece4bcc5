"""The detector's verdicts as the UI shows them: one line per choice, and the precision menu's."""

from __future__ import annotations

from dataclasses import dataclass

from mergechat.core.api import CapabilitiesReady, MeasuredSpeed, ModelState
from mergechat.core.detect.capabilities import BLOCKING_VERDICTS, ChoiceVerdict, Verdict
from mergechat.core.detect.verdicts import probe_verdict, probe_verdict_text
from mergechat.core.dtypes import DTYPES, DType

#: Shown for a precision the detector has not reported on (yet).
UNKNOWN = "not measured yet"


@dataclass(frozen=True)
class ShownVerdict:
    """One precision's verdict in the menu: the detector's kind (None: not measured) and text."""

    kind: Verdict | None
    text: str

    @property
    def blocked(self) -> bool:
        """True when the verdict rules the precision out (unsupported, does not fit)."""
        return self.kind in BLOCKING_VERDICTS


def verdict_line(choice: ChoiceVerdict) -> str:
    """``slow 4.2x per turn · decode 1.3x faster, ...``: a model's verdict with its speed."""
    return f"{choice.text} · {choice.speed}" if choice.speed else choice.text


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
    ready: CapabilitiesReady | None, device: str | None, state: ModelState | None = None
) -> dict[DType, ShownVerdict]:
    """One short verdict per precision on ``device`` (`ModelState.device_id`; assessment first,
    then probes); the loaded precision also shows what was measured on the model itself."""
    verdicts: dict[DType, ShownVerdict] = {}
    for dtype in DTYPES:
        shown = ShownVerdict(None, UNKNOWN)
        if ready is not None and device is not None:
            choice = ready.assessment.verdict(device, dtype) if ready.assessment else None
            probe = ready.capabilities.probe(device, dtype)
            if choice is not None:
                shown = ShownVerdict(choice.verdict, verdict_line(choice))
            elif probe is not None:
                shown = ShownVerdict(probe_verdict(probe), probe_verdict_text(probe))
        if state is not None and state.dtype == dtype and state.speed is not None:
            measured = measured_text(state.speed)
            text = measured if shown.kind is None else f"{shown.text} · {measured}"
            shown = ShownVerdict(shown.kind, text)
        verdicts[dtype] = shown
    return verdicts
