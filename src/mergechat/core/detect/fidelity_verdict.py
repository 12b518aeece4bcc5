"""Turn an audit's rows into one float16 verdict: safe, risky (within 2x of 65504) or unsafe."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from mergechat.core.detect.fidelity_cache import FidelityRow, Float16Safety
from mergechat.core.model.info import ModelInfo

FLOAT16_MAX: Final[float] = 65504.0
#: "Within 2x of float16's range": past this a longer prompt may overflow.
NEAR_LIMIT: Final[float] = FLOAT16_MAX / 2


def magnitude(value: float | None) -> str:
    """``71,000``, ``312``, ``0.25``, ``inf`` or ``-``."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return "inf"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def float16_verdict(
    rows: Sequence[FidelityRow],
    weight: tuple[float, str | None] | None,
    reference_maxima: dict[str, float] | None,
    info: ModelInfo,
) -> Float16Safety | None:
    """The verdict from measured rows, the largest weight and the float32 run's activations.

    None when nothing was measured that could tell (no finite run at all).
    """
    ran16 = [r for r in rows if r.dtype == "float16" and r.error is None]
    w_value, w_name = weight if weight is not None else (None, None)
    broken = next((r for r in ran16 if r.finite is False), None)
    if broken is not None:
        if w_value is not None and w_value > FLOAT16_MAX:
            return _unsafe(f"weight {w_name}", w_name, w_value)
        layer = broken.first_nonfinite_layer
        ref = (reference_maxima or {}).get(layer or "")
        if ref is not None and math.isfinite(ref) and ref > FLOAT16_MAX:
            return _unsafe(_what(layer), layer, ref)
        reason = (
            f"float16 is unsafe: {layer or 'the model'} turns to inf/NaN in float16 on "
            f"{broken.device}"
        )
        return Float16Safety(False, reason, layer, ref if ref is not None else math.inf)
    act = _largest_activation(rows)
    if act is None:
        return None
    a_value, a_name = act
    worst_value, worst_name, what = a_value, a_name, _what(a_name)
    if w_value is not None and w_value > a_value:
        worst_value, worst_name, what = w_value, w_name, f"weight {w_name}"
    if worst_value > FLOAT16_MAX:
        return _unsafe(what, worst_name, worst_value)
    if worst_value > NEAR_LIMIT:
        reason = (
            f"float16 is risky: {what} reaches {magnitude(worst_value)}, within 2x of "
            f"float16's range (65504); a longer text may overflow"
        )
        return Float16Safety(False, reason, worst_name, worst_value)
    ratio = FLOAT16_MAX / max(a_value, 1e-30)
    untested = "" if ran16 else "; float16 itself was not run here"
    reason = (
        f"float16 holds this {info.native_dtype} model comfortably (largest activation "
        f"{magnitude(a_value)} in {a_name}, 1/{ratio:,.0f} of float16's range{untested})"
    )
    return Float16Safety(True, reason, worst_name, worst_value)


def _what(layer: str | None) -> str:
    """``model.layers.3.mlp output`` or ``model.layers.3.mlp.down_proj (input)``."""
    if layer is None:
        return "an activation"
    return layer if layer.endswith(" (input)") else f"{layer} output"


def _unsafe(what: str, name: str | None, value: float) -> Float16Safety:
    reason = f"float16 is unsafe: {what} reaches {magnitude(value)} (> 65504) → inf"
    return Float16Safety(False, reason, name, value)


def _largest_activation(rows: Sequence[FidelityRow]) -> tuple[float, str | None] | None:
    """From the first finite float32 row, else the largest of the finite float16 rows."""
    for dtype in ("float32", "float16"):
        found = [
            (r.largest_activation, r.largest_activation_layer)
            for r in rows
            if r.dtype == dtype and r.finite and r.largest_activation is not None
        ]
        if found:
            return found[0] if dtype == "float32" else max(found, key=lambda f: f[0])
    return None
