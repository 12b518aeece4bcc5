"""The detector's choice against measured decode speed, each dtype's verdict, and the probe's cost.

For each model: the dtype mergechat picks with ``--dtype auto`` (``policy.assess`` on a probe
measured in this run) against the fastest *safe* dtype measured here with bare
``model.generate`` (safe: the model's own dtype or one with at least its range, so never float16
for a bfloat16 or float32 model); target ratio >= 0.95. Beside it, every dtype's verdict (ok /
slow N× / unsupported) next to its measured decode rate, with the verdict the same ``slow`` rule
gives on the measured rates, so a wrong verdict shows. The probe runs in a fresh process with an
empty probe cache (``MERGECHAT_CACHE_DIR`` set to a temporary folder; target < 2 s), then in a
second fresh process that reads the cache (target < 50 ms).

Decode rates: one worker process per dtype, interleaved, greedy, a fixed token count, the
first-to-last-token rate of the median repetition. A run stops after ``--max-seconds`` so an
emulated 500x-slow dtype cannot stall the suite.

Usage: python bench/detector.py [--quick] [--models demo,tiny-merge] [--reps 3] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

TARGET_RATIO = 0.95
PROBE_TARGET_S = 2.0
CACHED_TARGET_MS = 50.0
#: A decode run counts as quiet when other programs used at most this many cores meanwhile.
QUIET_CORES = 0.25


# -- workers --------------------------------------------------------------------------------------
def probe_worker(device: str, models: list[str]) -> None:
    """Time ``detect()`` (fresh or cached, as the cache dir holds), then assess each model."""
    start = time.perf_counter()
    import torch  # noqa: F401  (timed apart from the probe)

    import_s = time.perf_counter() - start
    from mergechat.core import inspect, policy, probe

    start = time.perf_counter()
    caps = probe.detect()
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    again = probe.detect()
    second_s = time.perf_counter() - start
    assessed = {}
    for path in models:
        info = inspect.inspect_model(Path(path))
        assessment = policy.assess(info, caps, device=device, dtype="auto")
        rec = assessment.recommendation
        assessed[path] = {
            "native": info.native_dtype,
            "auto": rec.dtype,
            "device": rec.device,
            "reason": rec.reason,
            "verdicts": {
                v.dtype: {
                    "verdict": v.verdict,
                    "text": v.text,
                    "probe_s": v.probe.seconds if v.probe else None,
                }
                for v in assessment.verdicts
                if v.device == rec.device
            },
        }
    common.say(
        {
            "import_torch_s": import_s,
            "detect_s": first_s,
            "from_cache": caps.from_cache,
            "probe_seconds": caps.probe_seconds,
            "second_detect_s": second_s,
            "second_from_cache": again.from_cache,
            "models": assessed,
        }
    )


def decode_worker(model: Path, device: str, dtype: str, tokens: int, max_seconds: float) -> None:
    """Bare transformers: ``from_pretrained(dtype=)`` + chat template + greedy ``generate``."""
    import torch

    from mergechat.core.devices import CpuMeter

    tokenizer, lm = common.load_bare(model, dtype, device)
    enc: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": common.PROMPT}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    ).to(lm.device)

    def run() -> dict[str, Any]:
        clock = common.token_clock()
        meter = CpuMeter()
        with torch.inference_mode():
            lm.generate(
                **enc,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                streamer=clock,
                max_time=max_seconds,
            )
        _, others = meter.stop()
        first, last = clock.times[1], clock.times[-1]  # times[0] is the prompt
        new = len(clock.times) - 1
        return {
            "new_tokens": new,
            "decode_tps": (new - 1) / (last - first) if new > 1 else 0.0,
            "others_cores": others,
        }

    common.serve(run, {"dtype": str(next(lm.parameters()).dtype).removeprefix("torch.")})


# -- parent ---------------------------------------------------------------------------------------
def run_probe(cache: Path, device: str, models: dict[str, Path]) -> dict[str, Any]:
    """One probe worker in a fresh process with ``cache`` as the mergechat cache dir."""
    env = {**os.environ, **common.WORKER_ENV, "MERGECHAT_CACHE_DIR": str(cache)}
    args = [sys.executable, __file__, "--worker", "probe", "--device", device]
    args += ["--models-json", json.dumps([str(p) for p in models.values()])]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    for line in done.stdout.splitlines():
        if line.startswith(common.TAG):
            result: dict[str, Any] = json.loads(line[len(common.TAG) :])
            return result
    raise RuntimeError(f"probe worker said nothing: {done.stderr[-2000:]}")


def quiet(run: dict[str, Any]) -> bool:
    """Whether other programs left this run alone (their CPU use at most `QUIET_CORES`)."""
    others = run.get("others_cores")
    return others is not None and others <= QUIET_CORES


def measure_decode(
    model: Path, device: str, dtypes: list[str], tokens: int, reps: int, extra: int, limit: float
) -> dict[str, Any]:
    """Decode rate per dtype, one worker each, interleaved; a worker that fails is recorded.

    On a shared machine a half-precision run next to a busy program can be 10x slower, so the
    rate is the median of the *quiet* runs; up to ``extra`` more rounds run while a dtype has
    none. When some dtype still has none, every run counts and the result says so.
    """
    workers: dict[str, common.Worker] = {}
    failed: dict[str, str] = {}
    try:
        for dtype in dtypes:
            args = ["--worker", "decode", "--model", str(model), "--device", device]
            args += ["--dtype", dtype, "--tokens", str(tokens), "--max-seconds", str(limit)]
            try:
                workers[dtype] = common.Worker(dtype, Path(__file__), args)
            except RuntimeError as exc:
                failed[dtype] = str(exc)
        runs = common.interleave(workers, reps) if workers else {}
        for _ in range(extra):
            if all(any(quiet(r) for r in rs) for rs in runs.values()):
                break
            for dtype, more in common.interleave(workers, 1).items():
                runs[dtype] += more
    finally:
        for w in workers.values():
            w.close()
    calm = bool(runs) and all(any(quiet(r) for r in rs) for rs in runs.values())
    rates = {
        d: common.median(r["decode_tps"] for r in rs if quiet(r) or not calm)
        for d, rs in runs.items()
    }
    basis = "quiet runs" if calm else "all runs: no quiet run for some dtype (busy machine)"
    return {"rates": rates, "basis": basis, "failed": failed, "runs": runs}


def measured_verdicts(rates: dict[str, float]) -> dict[str, tuple[str, float]]:
    """The probe's ``slow`` rule applied to measured decode rates: dtype -> (verdict, factor)."""
    from mergechat.core.probe import is_slow

    fastest = max(rates, key=rates.__getitem__)
    out = {}
    for dtype, rate in rates.items():
        factor = rates[fastest] / rate if rate > 0 else float("inf")
        slow = is_slow(dtype, factor, fastest)  # type: ignore[arg-type]
        out[dtype] = ("slow" if slow else "ok", factor)
    return out


def model_rows(
    label: str, assessed: dict[str, Any], decode: dict[str, Any]
) -> list[dict[str, Any]]:
    from mergechat.core.dtypes import has_range_of

    rows = []
    rates: dict[str, float] = decode["rates"]
    native, auto = assessed["native"], assessed["auto"]
    safe = {d: r for d, r in rates.items() if has_range_of(d, native)}  # type: ignore[arg-type]
    if safe and auto in rates:
        best = max(safe, key=safe.__getitem__)
        ratio = rates[auto] / safe[best]
        note = (
            f"auto {auto} {rates[auto]:.1f} tok/s; fastest safe {best} {safe[best]:.1f} tok/s "
            f"(model dtype {native}; safe: {', '.join(safe)}); medians of {decode['basis']}"
        )
        rows.append(
            common.row(
                "detector: auto vs fastest safe",
                ratio,
                unit="x",
                model=label,
                dtype=auto,
                mode="bare generate",
                target=f">= {TARGET_RATIO}",
                met=ratio >= TARGET_RATIO,
                note=note,
            )
        )
    measured = measured_verdicts(rates) if rates else {}
    for dtype, info in assessed["verdicts"].items():
        said = info["verdict"]
        if dtype in measured:
            verdict, factor = measured[dtype]
            rate = rates[dtype]
            seen = f"{verdict} {factor:.2f}x" if verdict == "slow" else f"ok ({factor:.2f}x)"
        else:
            verdict, rate = "unsupported", float("nan")
            seen = f"unsupported ({decode['failed'].get(dtype, 'not measured')[:80]})"
        agree = said == verdict or said == "does not fit"
        # Rates from disturbed runs cannot convict a verdict: flag, but leave "met" open.
        conclusive = decode["basis"] == "quiet runs" or verdict == "unsupported"
        flag = "" if agree else (" — WRONG VERDICT" if conclusive else " — disagrees (busy runs)")
        rows.append(
            common.row(
                "decode rate by dtype (verdict check)",
                rate,
                unit="tok/s",
                model=label,
                dtype=dtype,
                mode="bare generate",
                target="verdict matches measured",
                met=agree if agree or conclusive else None,
                note=f"detector: {info['text']}; measured: {seen}{flag}",
            )
        )
    return rows


def probe_rows(fresh: dict[str, Any], cached: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [
        common.row(
            "probe wall time (empty cache)",
            fresh["detect_s"],
            unit="s",
            mode="fresh process",
            target=f"< {PROBE_TARGET_S} s",
            met=fresh["detect_s"] < PROBE_TARGET_S and not fresh["from_cache"],
            note=f"import torch {fresh['import_torch_s']:.2f} s before it (not counted)",
        )
    ]
    hit = cached["from_cache"]
    value = cached["detect_s"] if hit else cached["second_detect_s"]
    note = "read from the cache file by a fresh process"
    if not hit:
        note = (
            "the fresh probe ran while other programs were busy, so detect() did not write it; "
            "this is the same process's second (in-memory cached) call"
        )
    rows.append(
        common.row(
            "probe cached run",
            value * 1000,
            unit="ms",
            mode="fresh process" if hit else "same process",
            target=f"< {CACHED_TARGET_MS:.0f} ms",
            met=value * 1000 < CACHED_TARGET_MS,
            note=note,
        )
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny-merge, 1 rep, 16 tokens")
    parser.add_argument("--models", default=None, help="default demo,tiny-merge")
    parser.add_argument("--reps", type=int, default=None, help="default 3 (quick: 1)")
    parser.add_argument("--tokens", type=int, default=None, help="default 64 (quick: 16)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="cap on one decode run")
    parser.add_argument(
        "--extra-reps", type=int, default=None, help="more rounds while a dtype has no quiet run"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", choices=("probe", "decode"), help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--models-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    tokens = args.tokens or (16 if args.quick else 64)
    args.extra_reps = args.extra_reps if args.extra_reps is not None else (1 if args.quick else 3)
    if args.worker == "probe":
        probe_worker(args.device, json.loads(args.models_json))
        return 0
    if args.worker == "decode":
        decode_worker(args.model, args.device, args.dtype, tokens, args.max_seconds)
        return 0

    from mergechat.core.dtypes import DTYPES

    models = common.resolve_models(
        args.models or ("tiny-merge" if args.quick else "demo,tiny-merge")
    )
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as cache:
        fresh = run_probe(Path(cache), args.device, models)
        cached = run_probe(Path(cache), args.device, models)
    rows = probe_rows(fresh, cached)
    results: dict[str, Any] = {"probe_fresh": fresh, "probe_cached": cached, "models": {}}
    plot_decode: dict[str, list[list[Any]]] = {}
    plot_relative: dict[str, list[list[Any]]] = {}
    print(
        f"probe: {fresh['detect_s']:.2f} s fresh (target < {PROBE_TARGET_S} s), "
        f"cached {rows[1]['value']:.1f} ms (target < {CACHED_TARGET_MS:.0f} ms)"
    )
    for label, path in models.items():
        assessed = fresh["models"][str(path)]
        decode = measure_decode(
            path, args.device, list(DTYPES), tokens, reps, args.extra_reps, args.max_seconds
        )
        results["models"][label] = {"assessed": assessed, "decode": decode}
        rows += model_rows(label, assessed, decode)
        rates = decode["rates"]
        plot_decode[label] = [[d, rates[d]] for d in DTYPES if d in rates]
        probe_s = {d: v["probe_s"] for d, v in assessed["verdicts"].items() if v["probe_s"]}
        if rates and probe_s:
            plot_relative[f"{label} decode"] = [
                [d, r / max(rates.values())] for d, r in rates.items()
            ]
            fastest = min(probe_s.values())
            plot_relative[f"{label} probe"] = [[d, fastest / s] for d, s in probe_s.items()]
        print(f"\n{label}: model dtype {assessed['native']}, auto picks {assessed['auto']}")
        print(f"  decode rates: medians of {decode['basis']}")
        for d in DTYPES:
            rate = f"{rates[d]:8.1f} tok/s" if d in rates else "  failed"
            print(f"  {d:<9}{rate}   detector: {assessed['verdicts'][d]['text']}")
    for r in rows:
        if r["metric"].startswith("detector"):
            print(f"{r['model']}: auto/fastest safe = {r['value']:.3f} ({r['note']})")
        if r["met"] is False or "disagrees" in r["note"]:
            what = "MISSED" if r["met"] is False else "NOISY"
            print(f"{what} {r['metric']} {r['model']} {r['dtype']}: {r['note']}")
    payload = {
        "summary": rows,
        "runs": results,
        "plots": {
            "decode_tps_by_dtype": {
                "series": plot_decode,
                "title": "bare decode rate by dtype",
                "ylabel": "tok/s",
            },
            "relative_speed_probe_vs_decode": {
                "series": plot_relative,
                "title": "speed relative to the fastest dtype: probe vs decode",
                "ylabel": "relative speed",
            },
        },
        "settings": {
            "quick": args.quick,
            "tokens": tokens,
            "reps": reps,
            "extra_reps": args.extra_reps,
            "device": args.device,
        },
    }
    print(f"wrote {common.write_result('detector', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
