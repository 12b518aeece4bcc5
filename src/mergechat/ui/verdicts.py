"""Per-precision verdict lines for the precision menu, from the detector's latest results."""

from __future__ import annotations

from mergechat.core.api import CapabilitiesReady
from mergechat.core.dtypes import DTYPES, DType

#: Shown for a precision the detector has not reported on (yet).
UNKNOWN = "not measured yet"


def device_id(label: str) -> str:
    """The first device of a `ModelState.device` label (``cuda:0+cpu offload`` -> ``cuda:0``)."""
    return label.split("+", 1)[0].split(",", 1)[0].strip()


def precision_verdicts(ready: CapabilitiesReady | None, device_label: str) -> dict[DType, str]:
    """One short verdict per precision on the model's device (assessment first, then probes)."""
    device = device_id(device_label)
    verdicts: dict[DType, str] = {}
    for dtype in DTYPES:
        text = UNKNOWN
        if ready is not None:
            choice = ready.assessment.verdict(device, dtype) if ready.assessment else None
            probe = ready.capabilities.probe(device, dtype)
            if choice is not None:
                text = choice.text
            elif probe is not None:
                text = probe.verdict
                if probe.verdict == "slow" and probe.factor:
                    text = f"slow {probe.factor:.1f}x"
                elif probe.verdict == "unsupported" and probe.error:
                    text = f"unsupported: {probe.error}"
        verdicts[dtype] = text
    return verdicts
