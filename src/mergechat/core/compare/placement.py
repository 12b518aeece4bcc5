"""Where each compared model runs: all loaded together when the detector's memory fit says they
fit side by side, else one at a time; one precision for all when every model runs it well."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from mergechat.core.detect.capabilities import Assessment, Capabilities
from mergechat.core.dtypes import DTYPES, DType
from mergechat.core.text import format_bytes


@dataclass(frozen=True)
class ModelPlacement:
    """The load for one model: the `LoadRequest` device and dtype, and the memory it needs."""

    device: str
    dtype: DType | Literal["auto"]
    needed_bytes: int | None = None
    #: ``device_map="auto"`` spreads it over devices (never loaded beside another model).
    spread: bool = False


@dataclass(frozen=True)
class Placement:
    """How a comparison runs; ``models[i]`` is None for a model that cannot be compared."""

    models: tuple[ModelPlacement | None, ...]
    #: All models stay loaded together; False: load, answer and unload one after the other.
    together: bool
    #: Replies are generated at the same time (each model on its own accelerator or server).
    parallel: bool
    #: The precision every local model uses, when "same precision for all" found one.
    same_dtype: DType | None
    #: One line for the screen: why together or one at a time, and the precision choice.
    reason: str


def _common_dtype(assessments: Sequence[Assessment], first: DType) -> DType | None:
    """A dtype every model can run on its recommended device: all "ok" first, then "slow"."""
    candidates = [first, *(d for d in DTYPES if d != first)]
    for accepted in (("ok",), ("ok", "slow")):
        for dtype in candidates:
            if all(_runs(a, dtype, accepted) for a in assessments):
                return dtype
    return None


def _runs(assessment: Assessment, dtype: DType, accepted: tuple[str, ...]) -> bool:
    rec = assessment.recommendation
    if rec.device_map is not None or dtype not in assessment.safe_dtypes:
        return False
    verdict = assessment.verdict(rec.device, dtype)
    return verdict is not None and verdict.verdict in accepted


def _model_placement(assessment: Assessment, dtype: DType | None) -> ModelPlacement:
    rec = assessment.recommendation
    if rec.device_map is not None:
        return ModelPlacement("auto", rec.dtype, None, spread=True)
    chosen = dtype or rec.dtype
    verdict = assessment.verdict(rec.device, chosen)
    needed = verdict.fit.needed_bytes if verdict is not None and verdict.fit is not None else None
    return ModelPlacement(rec.device, chosen, needed)


def place(
    assessments: Sequence[Assessment | None],
    remote: Sequence[bool],
    caps: Capabilities | None,
    *,
    same_precision: bool = True,
    dtype: DType | None = None,
) -> Placement:
    """Decide the loads for models with these assessments (None: a server, or not comparable).

    ``remote[i]`` marks a served model: it takes no local memory and keeps the server's
    precision. ``caps`` gives each device's free memory (None: unknown, so one at a time).
    ``dtype`` puts every local model in that precision, whatever the verdicts say.
    """
    local = [a for a in assessments if a is not None]
    same: DType | None = None
    precision = "each model in its own recommended precision"
    if dtype is not None:
        same, precision = dtype, f"all in {dtype} (as asked)"
    elif same_precision and len(local) > 1:
        same = _common_dtype(local, local[0].recommendation.dtype)
        precision = (
            f"all in {same} (same precision for all)"
            if same is not None
            else "each in its own precision (no precision runs well for every model)"
        )
    models: list[ModelPlacement | None] = []
    for assessment, served in zip(assessments, remote, strict=True):
        if served:
            models.append(ModelPlacement("auto", "auto"))
        else:
            models.append(None if assessment is None else _model_placement(assessment, same))
    pairs = list(zip(models, remote, strict=True))
    together, fit_reason = _fits_together([m for m, r in pairs if m and not r], caps)
    devices = [m.device for m, r in pairs if m is not None and not r]
    served_count = sum(1 for m, r in pairs if m is not None and r)
    parallel = (
        together
        and "cpu" not in devices
        and len(set(devices)) == len(devices)
        and len(devices) + served_count > 1
    )
    return Placement(tuple(models), together, parallel, same, f"{fit_reason}; {precision}")


def _fits_together(models: Sequence[ModelPlacement], caps: Capabilities | None) -> tuple[bool, str]:
    """Whether the local models fit in their devices' free memory at once, and the words why."""
    if len(models) <= 1:
        return True, "one local model: loaded once"
    if any(m.spread for m in models):
        return False, "a model is spread over several devices: one at a time"
    if caps is None or any(m.needed_bytes is None for m in models):
        return False, "memory needs unknown: one model at a time (load, answer, unload)"
    free = {d.id: d.free_bytes for d in caps.devices}
    parts = []
    for device in dict.fromkeys(m.device for m in models):
        needed = sum(m.needed_bytes or 0 for m in models if m.device == device)
        room = free.get(device)
        if room is None or needed > room:
            have = format_bytes(room) if room is not None else "an unknown amount"
            return False, (
                f"together they need {format_bytes(needed)} on {device} but {have} is free: "
                "one model at a time (load, answer, unload)"
            )
        parts.append(f"{format_bytes(needed)} of {format_bytes(room)} free on {device}")
    return True, f"all {len(models)} models fit together ({', '.join(parts)})"


def switched(
    placement: Placement, index: int, dtype: DType, assessment: Assessment | None
) -> Placement:
    """``placement`` with model ``index`` loading in ``dtype`` from now on (its memory need from
    ``assessment``); the shared precision and the reason's precision part follow."""
    spot = placement.models[index]
    if spot is None or spot.dtype == "auto":  # not comparable, or a served model
        return placement
    verdict = None if assessment is None or spot.spread else assessment.verdict(spot.device, dtype)
    needed = verdict.fit.needed_bytes if verdict is not None and verdict.fit is not None else None
    models = list(placement.models)
    models[index] = replace(spot, dtype=dtype, needed_bytes=needed)
    local = {m.dtype for m in models if m is not None and m.dtype != "auto"}
    same = dtype if local == {dtype} else None
    precision = f"all in {same}" if same is not None else "precisions differ between models"
    fit_reason = placement.reason.rpartition("; ")[0] or placement.reason
    return replace(
        placement, models=tuple(models), same_dtype=same, reason=f"{fit_reason}; {precision}"
    )
