"""The detector against real chat turns: its pick, its verdicts, its stability under load, its cost.

For each model, on this machine:
- quiet: ``mergechat doctor PATH --json`` with an empty cache gives the recommendation and the
  verdicts; bare transformers then times a real turn (a ``--prompt-tokens`` prompt prefilled plus
  ``--new-tokens`` decoded, greedy) in every dtype, interleaved. Target: the recommended dtype's
  turn at most 1/0.9 of the best *safe* dtype's (safe: float32 and the model's own dtype), and
  every ``ok`` verdict's measured turn no slower than every ``slow`` one's.
- busy: two spinning processes load both cores while four doctor runs, each with an empty
  cache, must give the same recommendation.
- cost: the probe's own seconds on a cache miss (< 5 s) and a cached ``detect`` in a fresh
  process (< 50 ms).

Models: ``demo`` (SmolLM2-135M-Instruct, float32), ``tiny-merge`` (a bfloat16 dare_ties merge)
and ``smollm2-360m`` (random weights in SmolLM2-360M's shape, bfloat16, built here).

Usage: python bench/detector.py [--quick] [--models demo,tiny-merge,smollm2-360m] [--reps 2]
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

TURN_TARGET = 0.9
PROBE_TARGET_S = 5.0
CACHED_TARGET_MS = 50.0
BUSY_RUNS = 4
#: (prompt, new) tokens of the timed turn per model; the 360M model gets a shorter turn.
TURNS = {"demo": (1000, 200), "tiny-merge": (1000, 200), "smollm2-360m": (512, 64)}
_SPIN = "import time\nend = time.time() + 600\nwhile time.time() < end: pass\n"


def smollm2_360m() -> Path:
    """A random-weight model of SmolLM2-360M's shape (bfloat16) with the demo's tokenizer."""
    root = common.bench_dir() / "smollm2-360m"
    if (root / "config.json").is_file():
        return root
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    demo = common.demo_model()
    config: Any = LlamaConfig(
        hidden_size=960, intermediate_size=2560, num_attention_heads=15, num_key_value_heads=5,
        num_hidden_layers=32, vocab_size=49152, max_position_embeddings=8192,
        tie_word_embeddings=True, rms_norm_eps=1e-5,
    )  # fmt: skip
    torch.manual_seed(0)
    model: Any = LlamaForCausalLM(config)
    model = model.to(torch.bfloat16)
    model.save_pretrained(root)
    AutoTokenizer.from_pretrained(demo).save_pretrained(root)
    return root


MODELS = {**common.MODELS, "smollm2-360m": smollm2_360m}


# -- workers --------------------------------------------------------------------------------------
def turn_worker(model: Path, dtype: str, prompt_tokens: int, new_tokens: int) -> None:
    """Bare transformers: time one greedy turn (prefill + decode) of fixed token counts."""
    import torch

    tokenizer, lm = common.load_bare(model, dtype, "cpu")
    vocab = min(len(tokenizer), lm.config.vocab_size)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(100, vocab, (1, prompt_tokens), generator=gen)
    with torch.inference_mode():
        lm.generate(ids[:, :16], max_new_tokens=2, do_sample=False)  # first-call costs

    def run() -> dict[str, Any]:
        clock = common.token_clock()
        start = time.perf_counter()
        with torch.inference_mode():
            lm.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                streamer=clock,
            )
        end = time.perf_counter()
        return {"turn_s": end - start, "prefill_s": clock.times[1] - start}

    common.serve(run, {"dtype": str(next(lm.parameters()).dtype).removeprefix("torch.")})


def cached_worker(model: Path) -> None:
    """Time a cached ``detect`` (the cache dir already holds this shape) in a fresh process."""
    import torch  # noqa: F401  (imported before the clock starts)

    from mergechat.core.detect import probe
    from mergechat.core.detect.probe_shape import shape_for
    from mergechat.core.model import inspection as inspect

    shape = shape_for(inspect.inspect_model(model))
    start = time.perf_counter()
    caps = probe.detect(shape=shape)
    common.say({"cached_s": time.perf_counter() - start, "from_cache": caps.from_cache})


# -- parent ---------------------------------------------------------------------------------------
def doctor(model: Path, cache: Path) -> dict[str, Any]:
    """``mergechat doctor PATH --json`` with ``cache`` as the cache dir: what the user sees."""
    env = {**os.environ, **common.WORKER_ENV, "MERGECHAT_CACHE_DIR": str(cache)}
    args = [sys.executable, "-m", "mergechat", "doctor", str(model), "--json"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=300)
    data = json.loads(done.stdout)
    caps, assessment = data["capabilities"], data["assessment"]
    rec = assessment["recommendation"]
    return {
        "recommendation": rec["dtype"],
        "device": rec["device"],
        "reason": rec["reason"],
        "probe_s": caps["probe_seconds"],
        "busy_cores": caps["busy_cores"],
        "reliable": all(p["reliable"] for p in caps["probes"]),
        "verdicts": {
            v["dtype"]: {
                "verdict": v["verdict"],
                "text": v["text"],
                "speed": v["speed"],
                "predicted_turn_s": (v["probe"] or {}).get("seconds"),
            }
            for v in assessment["verdicts"]
            if v["device"] == "cpu"
        },
        "native": data["model"]["native_dtype"],
    }


def fresh_doctor(model: Path) -> tuple[dict[str, Any], Path]:
    cache = Path(tempfile.mkdtemp(prefix="mergechat-bench-cache-"))
    return doctor(model, cache), cache


def busy_runs(model: Path) -> list[dict[str, Any]]:
    """Four doctor runs with empty caches while two processes spin on both cores."""
    spinners = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(2)]
    try:
        time.sleep(0.5)
        return [fresh_doctor(model)[0] for _ in range(BUSY_RUNS)]
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def turns(model: Path, dtypes: list[str], turn: tuple[int, int], reps: int) -> dict[str, float]:
    """Median turn seconds per dtype, one worker each, interleaved A B C A B C."""
    workers: dict[str, common.Worker] = {}
    try:
        for dtype in dtypes:
            args = ["--worker", "turn", "--model", str(model), "--dtype", dtype]
            args += ["--prompt-tokens", str(turn[0]), "--new-tokens", str(turn[1])]
            workers[dtype] = common.Worker(dtype, Path(__file__), args)
        runs = common.interleave(workers, reps)
    finally:
        for w in workers.values():
            w.close()
    return {d: common.median(r["turn_s"] for r in rs) for d, rs in runs.items()}


def cached_ms(model: Path, cache: Path) -> float | None:
    """A cached detect's milliseconds; None when the first probe was disturbed (not cached)."""
    env = {**os.environ, **common.WORKER_ENV, "MERGECHAT_CACHE_DIR": str(cache)}
    args = [sys.executable, __file__, "--worker", "cached", "--model", str(model)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=120)
    line = next(x for x in done.stdout.splitlines() if x.startswith(common.TAG))
    data = json.loads(line[len(common.TAG) :])
    return float(data["cached_s"]) * 1e3 if data["from_cache"] else None


def order_agrees(verdicts: dict[str, Any], measured: dict[str, float]) -> bool:
    """Every ``ok`` dtype's measured turn is no slower than every ``slow`` dtype's."""
    ok = [measured[d] for d, v in verdicts.items() if v["verdict"] == "ok" and d in measured]
    slow = [measured[d] for d, v in verdicts.items() if v["verdict"] == "slow" and d in measured]
    return not ok or not slow or max(ok) <= min(slow)


def bench_model(label: str, model: Path, reps: int, busy: bool) -> dict[str, Any]:
    quiet, cache = fresh_doctor(model)
    cached = cached_ms(model, cache)
    dtypes = [d for d, v in quiet["verdicts"].items() if v["verdict"] != "unsupported"]
    measured = turns(model, dtypes, TURNS.get(label, (1000, 200)), reps)
    safe = {"float32", quiet["native"]} & set(measured)
    best = min(safe, key=measured.__getitem__)
    rec = quiet["recommendation"]
    ratio = measured[best] / measured[rec] if rec in measured else 0.0
    result = {
        "quiet": quiet, "cached_ms": cached, "turn": TURNS.get(label, (1000, 200)),
        "measured_turn_s": measured, "best_safe": best, "turn_ratio": ratio,
        "order_agrees": order_agrees(quiet["verdicts"], measured),
    }  # fmt: skip
    if busy:
        runs = busy_runs(model)
        result["busy"] = runs
        result["busy_same"] = len({r["recommendation"] for r in runs}) == 1
    return result


def rows(label: str, r: dict[str, Any]) -> list[dict[str, Any]]:
    rec, best = r["quiet"]["recommendation"], r["best_safe"]
    turn = f"{r['turn'][0]}+{r['turn'][1]} tokens"
    out = [
        common.row(f"turn time, best safe ({best}) / recommended", r["turn_ratio"], unit="x",
                   model=label, dtype=rec, mode=turn, target=f">= {TURN_TARGET}",
                   met=r["turn_ratio"] >= TURN_TARGET,
                   note=", ".join(f"{d} {t:.2f} s" for d, t in r["measured_turn_s"].items())),
        common.row("verdict order agrees with measured turns", float(r["order_agrees"]),
                   unit="bool", model=label, target="1", met=r["order_agrees"],
                   note=", ".join(f"{d}: {v['text']}" for d, v in r["quiet"]["verdicts"].items())),
        common.row("probe, cache miss", r["quiet"]["probe_s"], unit="s", model=label,
                   target=f"< {PROBE_TARGET_S}", met=r["quiet"]["probe_s"] < PROBE_TARGET_S),
        common.row("detect, cached, fresh process", r["cached_ms"] or float("nan"), unit="ms",
                   model=label, target=f"< {CACHED_TARGET_MS}",
                   met=r["cached_ms"] is not None and r["cached_ms"] < CACHED_TARGET_MS,
                   note="" if r["cached_ms"] is not None else "busy probe: not cached"),
    ]  # fmt: skip
    if "busy" in r:
        recs = ", ".join(x["recommendation"] for x in r["busy"])
        cores = ", ".join(f"{x['busy_cores']:.1f}" for x in r["busy"] if x["busy_cores"])
        out.append(common.row(f"{BUSY_RUNS} doctor runs, 2 busy processes: same pick",
                              float(r["busy_same"]), unit="bool", model=label, target="1",
                              met=r["busy_same"],
                              note=f"picks {recs}; others' cores {cores}"))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", choices=["turn", "cached"])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--dtype")
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--models", default="demo,tiny-merge,smollm2-360m")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--no-busy", action="store_true", help="skip the busy-machine runs")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.worker == "turn":
        return turn_worker(args.model, args.dtype, args.prompt_tokens, args.new_tokens)
    if args.worker == "cached":
        return cached_worker(args.model)
    reps = 1 if args.quick else args.reps
    results: dict[str, Any] = {}
    table: list[dict[str, Any]] = []
    for label in args.models.split(","):
        path = MODELS[label]() if label in MODELS else Path(label)
        results[label] = bench_model(label, path, reps, busy=not args.no_busy)
        table += rows(label, results[label])
        print(json.dumps({label: results[label]}, indent=1), flush=True)
    relative: dict[str, dict[str, float]] = {}
    for label, r in results.items():
        measured = r["measured_turn_s"]
        predicted = {d: v["predicted_turn_s"] for d, v in r["quiet"]["verdicts"].items()}
        for name, times in (("predicted", predicted), ("measured", measured)):
            timed = {d: t for d, t in times.items() if t and d in measured}
            for dtype, t in timed.items():
                key = f"{label} {name}"
                relative.setdefault(key, {})[dtype] = min(timed.values()) / t
    plots = {
        "relative_turn_speed": {
            "series": relative,
            "title": "turn speed relative to the fastest dtype: probe's prediction vs bare turns",
            "ylabel": "relative speed",
        }
    }
    common.write_result("detector", {"models": results, "summary": table, "plots": plots})


if __name__ == "__main__":
    main()
