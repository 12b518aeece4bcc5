"""Time one device's dtypes with model-shaped kernels: round-robin rounds, robust statistics.

Every round times each dtype's decode step, prefill chunk and LM head once, in turn, so a load
spike hits all dtypes alike; a round during which other programs kept the cores busy is set
aside. The result is a predicted chat-turn time per dtype, from medians of paired ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from mergechat.core.detect.capabilities import DeviceInfo, ProbeResult, Verdict
from mergechat.core.detect.contention import CpuMeter, disturbed
from mergechat.core.detect.probe_kernel import (
    Kernels,
    Plan,
    Staged,
    build_master,
    make_kernels,
    plan_for,
)
from mergechat.core.detect.probe_shape import TURN_NEW_TOKENS, TURN_PROMPT_TOKENS, ProbeShape
from mergechat.core.dtypes import DType
from mergechat.core.errors import first_line

#: A dtype whose turn takes at least this many times the fastest dtype's is ``slow``.
SLOW_FACTOR: Final[float] = 2.0
#: Seconds of timing rounds per device: at least `MIN_CLEAN` undisturbed rounds within the
#: soft budget, more rounds (disturbed ones measured again) up to the hard budget.
SOFT_BUDGET_S: Final[float] = 1.5
HARD_BUDGET_S: Final[float] = 2.5
MIN_CLEAN: Final[int] = 3
MAX_ROUNDS: Final[int] = 12
#: One piece of work still unfinished after this long stops between stages and is extrapolated.
PIECE_LIMIT_S: Final[float] = 0.4

Progress = Callable[[float, str], None]
_PIECES: Final[tuple[str, ...]] = ("decode", "prefill", "head")


def error_text(exc: BaseException) -> str:
    """The first line of an exception's message (no type), as probe results report it."""
    return first_line(exc, typed=False)


@dataclass
class DtypeRun:
    """Working state of one dtype while its device is timed."""

    dtype: DType
    error: str | None = None
    kernels: Kernels | None = None
    #: Per round: seconds of each piece.
    rounds: list[dict[str, float]] = field(default_factory=list)
    #: Set when a piece was so slow it was extrapolated from a part: one estimate, no rounds.
    capped: dict[str, float] | None = None


def run_staged(
    work: Staged, sync: Callable[[], None], limit: float = PIECE_LIMIT_S
) -> tuple[float, Any]:
    """(seconds ``work`` takes, its output); past ``limit`` it stops between stages and
    extrapolates the time from the share done (the output is then None)."""
    start, done, out = time.perf_counter(), 0.0, None
    for share, stage in work.stages:
        out = stage()
        sync()
        done += share
        elapsed = time.perf_counter() - start
        if elapsed > limit and done < 1.0:
            return elapsed / done, None
    return time.perf_counter() - start, out


def _finite(torch: Any, out: Any) -> bool:
    return bool(torch.isfinite(out).all().item())


def _warm(
    run: DtypeRun, plan: Plan, master: list[dict[str, Any]], sync: Callable[[], None]
) -> None:
    """Cast this dtype's kernels and run each piece once (first calls pay one-off costs)."""
    import torch

    try:
        run.kernels = make_kernels(plan, master, run.dtype)
        times = {}
        for name in _PIECES:
            times[name], out = run_staged(getattr(run.kernels, name), sync)
            if out is not None and not _finite(torch, out):
                run.error = "the probe produced NaN or inf"
        if any(t > PIECE_LIMIT_S for t in times.values()):
            run.capped, run.kernels = times, None
    except Exception as exc:  # any backend failure is a verdict, not a crash
        run.error, run.kernels = error_text(exc), None


def _round(runs: list[DtypeRun], sync: Callable[[], None]) -> None:
    for run in runs:
        if run.kernels is None or run.error is not None:
            continue
        try:
            times = {name: run_staged(getattr(run.kernels, name), sync)[0] for name in _PIECES}
        except Exception as exc:
            run.error, run.kernels = error_text(exc), None
            continue
        run.rounds.append(times)


def _per_token(plan: Plan, times: dict[str, float]) -> tuple[float, float]:
    """(decode, prefill) seconds per token of the whole model from one round's piece times."""
    layers = plan.shape.layers
    decode = layers * times["decode"] / plan.copies / plan.layer_share
    decode += times["head"] / plan.head_share
    prefill = layers * times["prefill"] / plan.prefill_tokens / plan.layer_share
    return decode, prefill


def _turn(decode: float, prefill: float) -> float:
    return TURN_PROMPT_TOKENS * prefill + TURN_NEW_TOKENS * decode


def time_device(
    device: DeviceInfo,
    shape: ProbeShape,
    runs: Sequence[DtypeRun],
    sync: Callable[[], None],
    threads: int,
    progress: Progress,
) -> tuple[ProbeResult, ...]:
    """Build the kernels, warm each dtype, then time rounds until the budget is spent."""
    plan = plan_for(shape)
    live = [r for r in runs if r.error is None]
    progress(0.1, f"building {shape.describe()} on {device.id}")
    master = build_master(plan, device.id) if live else []
    for i, run in enumerate(live):
        progress(0.2 + 0.2 * i / len(live), f"warming {run.dtype} on {device.id}")
        _warm(run, plan, master, sync)
    del master
    clean: list[int] = []
    start, count = time.perf_counter(), 0
    active = [r for r in live if r.kernels is not None]
    while active and count < MAX_ROUNDS:
        elapsed = time.perf_counter() - start
        if elapsed >= HARD_BUDGET_S or (len(clean) >= MIN_CLEAN and elapsed >= SOFT_BUDGET_S):
            break
        progress(0.4 + 0.6 * min(1.0, elapsed / SOFT_BUDGET_S), f"timing {device.id}")
        meter = CpuMeter()
        _round(active, sync)
        _, others = meter.stop()
        if not disturbed(others, meter.cores or 1, threads):
            clean.append(count)
        count += 1
        active = [r for r in active if r.kernels is not None]
    for run in runs:
        run.kernels = None
    reliable = len(clean) >= MIN_CLEAN or count == 0
    return _results(device, plan, runs, clean, reliable)


def _results(
    device: DeviceInfo, plan: Plan, runs: Sequence[DtypeRun], clean: list[int], reliable: bool
) -> tuple[ProbeResult, ...]:
    """Turn the rounds into per-dtype predictions and verdicts."""
    rounds = clean if clean else None
    per_round: dict[DType, list[tuple[float, float]]] = {}
    for run in runs:
        if run.error is not None:
            continue
        if run.capped is not None:
            per_round[run.dtype] = [_per_token(plan, run.capped)]
        elif run.rounds:
            chosen = [run.rounds[i] for i in rounds if i < len(run.rounds)] if rounds else []
            per_round[run.dtype] = [_per_token(plan, t) for t in (chosen or run.rounds)]
    medians = {
        d: (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals))
        for d, vals in per_round.items()
    }
    turns = {d: _turn(*m) for d, m in medians.items()}
    fastest = min(turns, key=turns.__getitem__, default=None)
    results = []
    for run in runs:
        if run.dtype not in medians or fastest is None:
            error = run.error or "the probe could not be timed"
            results.append(ProbeResult(device.id, run.dtype, "unsupported", None, error=error))
            continue
        ratios = _paired(per_round, run.dtype, fastest)
        decode, prefill = medians[run.dtype]
        verdict: Verdict = "slow" if reliable and ratios[0] >= SLOW_FACTOR else "ok"
        results.append(
            ProbeResult(
                device.id,
                run.dtype,
                verdict,
                turns[run.dtype],
                ratios[0],
                decode_s=decode,
                prefill_s=prefill,
                decode_factor=ratios[1],
                prefill_factor=ratios[2],
                reliable=reliable,
            )
        )
    return tuple(results)


def _paired(
    per_round: dict[DType, list[tuple[float, float]]], dtype: DType, ref: DType
) -> tuple[float, float, float]:
    """Medians of the round-by-round ratios (turn, decode, prefill) of ``dtype`` to ``ref``."""
    mine, theirs = per_round[dtype], per_round[ref]
    pairs = list(zip(mine, theirs, strict=False)) if len(mine) == len(theirs) else []
    if not pairs:  # a capped dtype has one estimate: compare it with the reference's median
        med = (statistics.median(v[0] for v in theirs), statistics.median(v[1] for v in theirs))
        pairs = [(m, med) for m in mine]
    turn = statistics.median(_turn(*a) / _turn(*b) for a, b in pairs)
    decode = statistics.median(a[0] / b[0] for a, b in pairs)
    prefill = statistics.median(a[1] / b[1] for a, b in pairs)
    return turn, decode, prefill
