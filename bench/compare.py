"""Compare: the total time of one comparison against the sum of each model answering alone.

A merge and its sources (default: the tiny mergekit merge) are copied with a generation config
that makes every reply exactly ``--tokens`` long and greedy, so every run does the same work.
Three ways, interleaved over ``--reps`` repetitions, all through `CompareRunner` and the one-shot
path's client factory (``--engine process``: each local model in its own engine process, the
default of ``mergechat compare``; ``--engine thread``: the thread `Engine` in this process):

- ``alone``: each model in a runner of its own, all loaded first; the sum of their answers.
- ``together``: all models loaded together (they fit); the time of one ``ask``.
  Target: together <= 1.1x the sum of the ``alone`` answers.
- ``one at a time``: load, answer, unload per model; the overhead of ``ask`` over the sum of
  the ``alone`` answers, against the sum of that ask's load times. Target: overhead = loads
  (reported as the share of the overhead the loads explain, near 1.0; the note adds the
  unloads, which wait until an engine process has ended and its memory is free).

Usage: python bench/compare.py [--quick] [--model tiny-merge|PATH] [--reps 3] [--tokens 32]
           [--device cpu] [--engine process|thread]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

from mergechat.core.compare.clients import default_factory
from mergechat.core.compare.events import ModelResult
from mergechat.core.compare.placement import Placement
from mergechat.core.compare.plan import ComparePlan, explicit_plan, recipe_plan
from mergechat.core.compare.runner import CompareRunner
from mergechat.core.settings.generation import GenerationSettings


def _copies(merged: Path, root: Path, tokens: int) -> ComparePlan:
    """The merge's plan with every model replaced by a copy that answers exactly ``tokens``."""
    plan = recipe_plan(str(merged))
    paths = [common.forced_length_copy(m.path, root, tokens) for m in plan.models]
    return explicit_plan([str(p) for p in paths])


def _ask(
    plans: list[ComparePlan], device: str, tokens: int, *, one_at_a_time: bool = False
) -> dict[str, Any]:
    """Seconds of the ``ask`` of each plan's runner (loads before it excluded when together).

    Every runner is prepared before the first ask and closed after the last: a model's
    unload must not slow the next one's answer (it does in one process, for the thread engine).
    """
    runners = [
        CompareRunner(plan, default_factory, device=device, one_at_a_time=one_at_a_time)
        for plan in plans
    ]
    settings = GenerationSettings(temperature=0.0, max_new_tokens=tokens)
    seconds = 0.0
    results: list[ModelResult] = []
    placements: list[Placement] = []
    try:
        for runner in runners:
            placements.append(runner.prepare())
        for runner in runners:
            started = time.perf_counter()
            results += runner.ask(common.PROMPT, settings)
            seconds += time.perf_counter() - started
    finally:
        for runner in runners:
            runner.close()
    errors = [r.error for r in results if r.error]
    if errors:
        raise SystemExit(f"a model failed: {errors[0]}")
    return {
        "seconds": seconds,
        "together": all(p.together for p in placements),
        "loads_s": sum(r.load_s or 0.0 for r in results),
        "unloads_s": sum(r.unload_s or 0.0 for r in results),
        "tokens": [r.stats.new_tokens if r.stats else 0 for r in results],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 rep, 8 tokens (a smoke run)")
    parser.add_argument("--model", default="tiny-merge", help="tiny-merge or a merge folder")
    parser.add_argument("--reps", type=int, default=None, help="default 3 (quick: 1)")
    parser.add_argument("--tokens", type=int, default=None, help="default 32 (quick: 8)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--engine", choices=("process", "thread"), default="process", help="default process"
    )
    args = parser.parse_args()
    os.environ["MERGECHAT_ENGINE"] = args.engine  # read by the one-shot's factory
    reps = args.reps or (1 if args.quick else 3)
    tokens = args.tokens or (8 if args.quick else 32)
    merged = common.resolve_models(args.model)[args.model]
    runs: dict[str, list[dict[str, Any]]] = {"alone": [], "together": [], "one_at_a_time": []}
    with tempfile.TemporaryDirectory() as tmp:
        plan = _copies(merged, Path(tmp), tokens)
        singles = [ComparePlan((m,)) for m in plan.models]
        _ask([plan], args.device, tokens)  # untimed warm-up: the first torch work is slower
        for rep in range(reps):
            order = ["alone", "together", "one_at_a_time"]
            for way in order if rep % 2 == 0 else order[::-1]:
                if way == "alone":
                    runs["alone"].append(_ask(singles, args.device, tokens))
                else:
                    by_one = way != "together"
                    runs[way].append(_ask([plan], args.device, tokens, one_at_a_time=by_one))
    alone_s = common.median(r["seconds"] for r in runs["alone"])
    together_s = common.median(r["seconds"] for r in runs["together"])
    serial = runs["one_at_a_time"]
    overhead = common.median(r["seconds"] - alone_s for r in serial)
    loads = common.median(r["loads_s"] for r in serial)
    unloads = common.median(r["unloads_s"] for r in serial)
    ratio = together_s / alone_s
    n = len(plan.models)
    summary = [
        common.row(
            "compare total vs sum alone (all fit)",
            ratio,
            unit="x",
            model=args.model,
            mode=f"{n} models, {tokens} tokens, {args.engine} engine",
            baseline=alone_s,
            target="<= 1.1",
            met=ratio <= 1.1 and all(r["together"] for r in runs["together"]),
        ),
        common.row(
            "one-at-a-time overhead explained by loads",
            loads / overhead if overhead > 0 else float("inf"),
            unit="x",
            model=args.model,
            mode=f"{n} models, {tokens} tokens, {args.engine} engine",
            baseline=overhead,
            target="~ 1.0 (overhead = load times)",
            met=overhead <= loads * 1.1 + 0.05 * alone_s,
            note=f"overhead {overhead:.2f} s, loads {loads:.2f} s, unloads {unloads:.2f} s",
        ),
    ]
    settings = {
        "quick": args.quick,
        "reps": reps,
        "tokens": tokens,
        "device": args.device,
        "engine": args.engine,
    }
    path = common.write_result("compare", {"settings": settings, "summary": summary, "runs": runs})
    print(f"{args.engine} engine: sum alone {alone_s:.3f} s, together {together_s:.3f} s")
    for line in summary:
        print(f"{line['metric']}: {line['value']:.3f} ({line['note'] or line['target']})")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
