"""`mergechat doctor PATH --fidelity`: run the fidelity audit and show its rows and conclusion."""

from __future__ import annotations

import dataclasses
import math
import textwrap
from collections.abc import Callable, Iterable
from typing import Any

from mergechat.core.detect.capabilities import DeviceInfo
from mergechat.core.detect.fidelity_cache import FidelityRow, Float16Safety, rows_to_json
from mergechat.core.detect.fidelity_verdict import magnitude
from mergechat.core.model.info import ModelInfo

_ERROR_WIDTH = 72  # long errors are cut in the text report (JSON keeps them whole)
_WIDTH = 100  # the conclusion is wrapped to this width, like the rest of doctor's report


def measure(
    info: ModelInfo,
    devices: Iterable[DeviceInfo],
    device: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> tuple[tuple[FidelityRow, ...], Float16Safety | None]:
    """The audit's rows and verdict on ``devices`` (only ``device`` unless it is ``auto``).

    A model with a problem that stops it from loading gives one error row per dtype.
    """
    from mergechat.core.dtypes import DTYPES

    chosen = tuple(d for d in devices if device in ("auto", d.id))
    if info.problems:
        text = f"not measured: {info.problems[0].message}"
        return tuple(FidelityRow(d.id, t, error=text) for d in chosen for t in DTYPES), None
    from mergechat.core.engine.fidelity_audit import audit_model

    audit = audit_model(info, chosen, progress=progress)
    return audit.rows, audit.safety


def to_json(safety: Float16Safety | None, rows: tuple[FidelityRow, ...]) -> dict[str, Any]:
    """``fidelity`` (list of rows) and ``fidelity_verdict`` as strict JSON (inf becomes null)."""
    verdict = None
    if safety is not None:
        verdict = dataclasses.asdict(safety)
        if verdict["worst_value"] is not None and not math.isfinite(verdict["worst_value"]):
            verdict["worst_value"] = None
    return {"fidelity": rows_to_json(rows), "fidelity_verdict": verdict}


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _diff(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if not math.isfinite(value) else f"{value:.3g}"


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _ERROR_WIDTH else text[: _ERROR_WIDTH - 1] + "…"


def lines(rows: tuple[FidelityRow, ...], safety: Float16Safety | None) -> list[str]:
    """The "Fidelity (measured on this model)" section: aligned rows and a one-line conclusion."""
    out = [
        "Fidelity (measured on this model: a fixed text of prose, code and numbers, "
        "compared with float32)"
    ]
    out.append(
        f"    {'device':<8}{'dtype':<10}{'finite':<8}{'top-1':>7}{'max logit diff':>16}"
        f"  largest activation"
    )
    for row in rows:
        head = f"    {row.device:<8}{row.dtype:<10}"
        if row.error is not None:
            out.append(head + _cut(row.error))
            continue
        where = f" in {row.largest_activation_layer}" if row.largest_activation_layer else ""
        if row.first_nonfinite_layer is not None:
            where = f" from {row.first_nonfinite_layer} on"
        out.append(
            f"{head}{_yes_no(row.finite):<8}{_percent(row.top1_agreement):>7}"
            f"{_diff(row.max_logit_diff):>16}  {magnitude(row.largest_activation)}{where}"
        )
    weight = next((r for r in rows if r.largest_weight_name is not None), None)
    if weight is not None:
        out.append(
            f"  Largest weight     {magnitude(weight.largest_weight)} in "
            f"{weight.largest_weight_name}"
        )
    reason = safety.reason if safety is not None else "not measured: no precision ran here"
    lead = "  Conclusion         "
    out.append(textwrap.fill(reason, _WIDTH, initial_indent=lead, subsequent_indent=" " * 21))
    return out
