"""Precision switch through mergechat's Engine: in-memory cast vs reload from disk, per direction.

``switching.switch`` casts in memory when the cast is lossless against the weights on disk and
reloads otherwise, so each direction normally takes one path only. To compare both paths on the
same direction, each worker process forces one of them by patching ``switching.choose_method``
(the engine's choice for a freshly loaded model is still recorded as ``natural``); everything
else is the real engine: the reference logits, the cast or reload, the NaN/inf guard and the
fidelity report. Two workers (cast, reload) per model run a cycle through every direction
between the dtypes the detector says run on the device, interleaved A B A B; the figure is the
median of the per-repetition ratios cast/reload of the engine's own switch time
(``SwitchFinished.seconds``, what the user waits). The note adds the time of the cast or reload
alone (without the two fidelity forward passes). Target: cast <= 0.1x reload.

Usage: python bench/switch.py [--quick] [--models demo,tiny-merge] [--reps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import queue
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import common

TARGET = 0.1
#: Every direction between the three dtypes, ordered so each starts where the last one ended.
CYCLE: tuple[tuple[str, str], ...] = (
    ("float32", "bfloat16"),
    ("bfloat16", "float16"),
    ("float16", "float32"),
    ("float32", "float16"),
    ("float16", "bfloat16"),
    ("bfloat16", "float32"),
)
METHODS = ("cast", "reload")


# -- worker ---------------------------------------------------------------------------------------
class EngineDriver:
    """The real Engine with a queue for a sink; the main thread waits for the events it needs."""

    def __init__(self) -> None:
        from mergechat.core.engine.engine import Engine

        self.events: queue.Queue[Any] = queue.Queue()
        self.engine = Engine(self.events.put)
        self.engine.start()

    def wait(self, *kinds: type, timeout: float = 600.0) -> Any:
        """The next event of one of ``kinds`` (others are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            if isinstance(event, kinds):
                return event


def worker(model: Path, device: str, method: str) -> None:
    """Load ``model``, force ``method`` for every switch and serve one cycle per ``run``."""
    from mergechat.core.api import (
        CapabilitiesReady,
        LoadFailed,
        LoadRequest,
        ModelLoaded,
        SwitchFailed,
        SwitchFinished,
    )
    from mergechat.core.engine import switching
    from mergechat.core.engine.model_facts import holds_disk_values

    driver = EngineDriver()
    driver.engine.detect(None, device)
    caps = driver.wait(CapabilitiesReady).capabilities
    runs_on = {p.dtype for p in caps.probes if p.verdict != "unsupported"}
    plan = [(a, b) for a, b in CYCLE if a in runs_on and b in runs_on]
    if not plan:
        raise SystemExit(f"fewer than two dtypes run on {device}")
    driver.engine.load(LoadRequest(model, device=device, dtype=plan[0][0]))  # type: ignore[arg-type]
    loaded = driver.wait(ModelLoaded, LoadFailed)
    if isinstance(loaded, LoadFailed):
        raise SystemExit(f"load failed: {loaded.message}")

    seen: dict[str, Any] = {}
    original = switching.choose_method

    def forced(held: Any, target: Any) -> Any:
        # What the engine would pick for a model freshly loaded in the current dtype.
        fresh = dataclasses.replace(held, exact=holds_disk_values(held.info, held.state.dtype))
        seen["natural"] = original(fresh, target)
        return method

    def timed(function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args)
            finally:
                seen["op_s"] = time.perf_counter() - start

        return wrapper

    mock.patch.object(switching, "choose_method", forced).start()
    mock.patch.object(switching, "_cast", timed(switching._cast)).start()
    mock.patch.object(switching, "_reload", timed(switching._reload)).start()

    def switch(target: str) -> dict[str, Any]:
        seen.clear()
        start = time.perf_counter()
        driver.engine.switch_dtype(target)  # type: ignore[arg-type]
        event = driver.wait(SwitchFinished, SwitchFailed)
        wall = time.perf_counter() - start
        if isinstance(event, SwitchFailed):
            return {"failed": event.message, "wall_s": wall}
        fidelity = event.fidelity
        return {
            "method": event.method,
            "natural": seen.get("natural"),
            "switch_s": event.seconds,
            "op_s": seen.get("op_s"),
            "wall_s": wall,
            "dtype_after": event.state.dtype,
            "top1": fidelity.top1_agreement if fidelity else None,
        }

    def run() -> dict[str, Any]:
        result: dict[str, Any] = {}
        for source, target in plan:
            state = driver.engine.state
            if state is None or state.dtype != source:
                switch(source)  # reposition, untimed
            result[f"{source}->{target}"] = switch(target)
        return result

    state = driver.engine.state
    common.serve(run, {"dtype": state.dtype if state else None, "device": device, "plan": plan})
    driver.engine.shutdown()


# -- parent ---------------------------------------------------------------------------------------
def measure(label: str, model: Path, device: str, reps: int) -> dict[str, Any]:
    """Interleave the cast and reload workers over ``reps`` cycles; per-direction figures."""
    script = Path(__file__)
    workers: dict[str, common.Worker] = {}
    try:
        for method in METHODS:
            args = ["--worker", method, "--model", str(model), "--device", device]
            workers[method] = common.Worker(method, script, args)
        runs = common.interleave(workers, reps)
    finally:
        for w in workers.values():
            w.close()
    directions: dict[str, Any] = {}
    for direction in runs["cast"][0]:
        cast = [r[direction] for r in runs["cast"]]
        reload = [r[direction] for r in runs["reload"]]
        failed = [r["failed"] for r in cast + reload if "failed" in r]
        if failed:
            directions[direction] = {"failed": failed}
            continue
        directions[direction] = {
            "natural": cast[0]["natural"],
            "cast_s": common.median(r["switch_s"] for r in cast),
            "reload_s": common.median(r["switch_s"] for r in reload),
            "cast_op_s": common.median(r["op_s"] for r in cast),
            "reload_op_s": common.median(r["op_s"] for r in reload),
            "ratio": common.paired_ratio(
                [r["switch_s"] for r in cast], [r["switch_s"] for r in reload]
            ),
            "op_ratio": common.paired_ratio([r["op_s"] for r in cast], [r["op_s"] for r in reload]),
            "top1_cast": cast[0]["top1"],
            "top1_reload": reload[0]["top1"],
        }
    return {"model": label, "path": str(model), "reps": reps, "directions": directions, "raw": runs}


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for direction, d in result["directions"].items():
        source, target = direction.split("->")
        name = f"{source}→{target}"
        if "failed" in d:
            rows.append(
                common.row(
                    "switch cast/reload",
                    float("nan"),
                    unit="x",
                    model=result["model"],
                    dtype=name,
                    target=f"<= {TARGET}",
                    met=False,
                    note=f"switch failed: {d['failed'][0]}",
                )
            )
            continue
        note = (
            f"cast {d['cast_s']:.3f} s vs reload {d['reload_s']:.3f} s (engine switch time); "
            f"cast/reload alone {d['cast_op_s']:.3f}/{d['reload_op_s']:.3f} s "
            f"= {d['op_ratio']:.3f}x; engine picks {d['natural']}"
        )
        rows.append(
            common.row(
                "switch cast/reload",
                d["ratio"],
                unit="x",
                model=result["model"],
                dtype=name,
                mode=f"engine picks {d['natural']}",
                target=f"<= {TARGET}",
                met=d["ratio"] <= TARGET,
                note=note,
            )
        )
    return rows


def plot_data(results: list[dict[str, Any]]) -> dict[str, Any]:
    """``switch_seconds``: per model and method, [direction, seconds] pairs."""
    series: dict[str, list[list[Any]]] = {}
    for result in results:
        for method in METHODS:
            series[f"{result['model']} {method}"] = [
                [direction.replace("->", "→"), d[f"{method}_s"]]
                for direction, d in result["directions"].items()
                if "failed" not in d
            ]
    spec = {"series": series, "title": "precision switch", "ylabel": "seconds", "logy": True}
    return {"switch_seconds": spec}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny-merge only, 2 reps")
    parser.add_argument("--models", default=None, help="default demo,tiny-merge")
    parser.add_argument("--reps", type=int, default=None, help="default 3 (quick: 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.model, args.device, args.worker)
        return 0

    models = common.resolve_models(
        args.models or ("tiny-merge" if args.quick else "demo,tiny-merge")
    )
    reps = args.reps or (2 if args.quick else 3)
    results = [measure(label, path, args.device, reps) for label, path in models.items()]
    rows = [r for result in results for r in summary_rows(result)]
    print(f"\nprecision switch on {args.device}, median of {reps} interleaved cycles")
    print(f"{'model':<11}{'direction':<22}{'cast s':>8}{'reload s':>9}{'ratio':>7}  engine picks")
    for result in results:
        for direction, d in result["directions"].items():
            if "failed" in d:
                print(f"{result['model']:<11}{direction:<22} failed: {d['failed'][0]}")
                continue
            print(
                f"{result['model']:<11}{direction:<22}{d['cast_s']:8.3f}{d['reload_s']:9.3f}"
                f"{d['ratio']:7.3f}  {d['natural']}"
            )
    settings = {"quick": args.quick, "reps": reps, "device": args.device}
    payload = {"summary": rows, "runs": results, "plots": plot_data(results), "settings": settings}
    path = common.write_result("switch", payload)
    missed = sum(1 for r in rows if r["met"] is False)
    print(f"target cast <= {TARGET}x reload: missed in {missed} of {len(rows)}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
