"""Decode throughput and time to first token: mergechat's one-shot mode and app vs bare generate.

For each model and each dtype the detector says runs on the device (``ok`` or ``slow``), three
worker processes keep the model loaded and answer the same prompt with exactly ``--tokens``
greedy tokens (a linked copy of the model whose generation config forces the length):

- ``bare``: ``AutoModelForCausalLM.from_pretrained`` + ``apply_chat_template`` +
  ``model.generate`` on the main thread; a streamer that only notes the time of each token.
- ``oneshot``: ``mergechat.cli.oneshot.run_oneshot`` (what ``mergechat PATH --prompt`` runs) over
  the real engine, the reply streamed to /dev/null and saved in a scratch history.
- ``app``: the real ``MergechatApp`` and engine headless through ``App.run_test``: paste the
  prompt, press Enter, wait until the app has handled the finished reply (``bench/app_driver.py``).

The parent runs them interleaved (bare, oneshot, app, then the reverse order ...) after an
untimed warm-up in each. Per run: decode tok/s (first to last token, on the clock of the thread
that generates), time to first token and end-to-end tok/s (from the moment a user starts the
request: ``apply_chat_template`` called / ``run_oneshot`` called / Enter pressed, to the reply
complete in that side's hands). Ratios are medians of per-repetition ratios (`paired_ratio`).

Usage: python bench/decode_throughput.py [--quick] [--models demo,tiny-merge] [--dtypes LIST]
                                         [--device auto] [--tokens 48] [--reps 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import common

SIDES = ("bare", "oneshot", "app")
MODES = ("oneshot", "app")
RATIO_KEYS = ("decode_tps", "e2e_tps", "ttft_s")
THROUGHPUT_TARGET = 0.97
TTFT_TARGET = 1.1


# -- worker side --------------------------------------------------------------------------------
def bare_worker(model: Path, device: str, dtype: str, tokens: int) -> None:
    """Plain transformers on the main thread: apply_chat_template + model.generate."""
    from app_driver import text_digest

    tokenizer, lm = common.load_bare(model, dtype, device)
    messages = [{"role": "user", "content": common.PROMPT}]

    def run() -> dict[str, Any]:
        clock = common.token_clock()
        cpu0 = time.thread_time()
        start = time.perf_counter()
        enc: Any = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        ).to(device)
        out = lm.generate(**enc, max_new_tokens=tokens, do_sample=False, streamer=clock)
        prompt_len = int(enc["input_ids"].shape[-1])
        text = tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True)
        end = time.perf_counter()
        new = int(out.shape[-1]) - prompt_len
        first, last = clock.times[1], clock.times[-1]
        return {
            "new_tokens": new,
            "prompt_tokens": prompt_len,
            "ttft_s": first - start,
            "total_s": end - start,
            "decode_tps": (new - 1) / (last - first),
            "e2e_tps": new / (end - start),
            "main_thread_cpu_s": time.thread_time() - cpu0,
            "text_sha": text_digest(text),
        }

    real = str(next(lm.parameters()).dtype).removeprefix("torch.")
    common.serve(run, {"dtype": real})


def worker(side: str, model: Path, device: str, dtype: str, tokens: int) -> None:
    """Serve runs of one side until the parent says stop."""
    if side == "bare":
        bare_worker(model, device, dtype, tokens)
        return
    from app_driver import AppDriver, OneShotDriver

    driver = (OneShotDriver if side == "oneshot" else AppDriver)(
        model, device, dtype, common.PROMPT, tokens
    )
    common.serve(driver.run, {"dtype": driver.real_dtype()})
    if isinstance(driver, AppDriver):
        driver.close()


# -- parent side --------------------------------------------------------------------------------
def runnable(model: Path, device: str) -> tuple[str, str, dict[str, str]]:
    """The device, the detector's dtype for ``model`` and every dtype's verdict text there."""
    from mergechat.core.detect.policy import assess
    from mergechat.core.detect.probe import detect
    from mergechat.core.model.inspection import inspect_model

    assessment = assess(inspect_model(model), detect(), device=device)
    rec = assessment.recommendation
    verdicts: dict[str, str] = {
        v.dtype: v.text for v in assessment.verdicts if v.device == rec.device
    }
    return str(rec.device), str(rec.dtype), verdicts


def measure(model: Path, device: str, dtype: str, tokens: int, reps: int) -> dict[str, Any]:
    """Start the three workers (loading side by side: nothing is timed yet), interleave their
    runs, then stop them."""
    args = ["--model", str(model), "--device", device, "--dtypes", dtype, "--tokens", str(tokens)]
    with ThreadPoolExecutor(len(SIDES)) as pool:
        starting = {
            side: pool.submit(common.Worker, side, Path(__file__), ["--worker", side, *args])
            for side in SIDES
        }
    workers: dict[str, common.Worker] = {}
    try:
        for side, future in starting.items():
            workers[side] = future.result()  # re-raises a worker that died while starting
        runs = common.interleave(workers, reps)
    finally:
        for future in starting.values():
            if future.exception() is None:
                future.result().close()
    return {"real_dtype": {s: w.ready.get("dtype") for s, w in workers.items()}, "runs": runs}


def measure_all(
    models: str, dtypes: str, device: str, quick: bool, tokens: int, reps: int, scratch: Path
) -> list[dict[str, Any]]:
    """Every model x runnable dtype (only the detector's choice when ``quick``), one cell each."""
    # The workers' config and history go to the scratch folder; models and probes stay cached.
    os.environ.update(
        MERGECHAT_CONFIG_DIR=str(scratch / "config"),
        MERGECHAT_DATA_DIR=str(scratch / "data"),
        # What the CLI sets, for every side.
        TRANSFORMERS_VERBOSITY="error",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TQDM_DISABLE="1",
    )
    cells: list[dict[str, Any]] = []
    for label, model in common.resolve_models(models).items():
        forced = common.forced_length_copy(model, scratch / "models", tokens)
        where, chosen, verdicts = runnable(forced, device)
        if dtypes:
            wanted = dtypes.split(",")
        elif quick:
            wanted = [chosen]
        else:
            wanted = [d for d, text in verdicts.items() if text == "ok" or text.startswith("slow")]
        if not wanted:  # say why nothing is measured instead of writing an empty table
            print(
                f"decode_throughput: {label}: no runnable dtype on {where}: {verdicts}",
                file=sys.stderr,
            )
        for dtype in wanted:
            print(f"decode_throughput: {label} {dtype} on {where} ...", file=sys.stderr)
            cell: dict[str, Any] = {"model": label, "dtype": dtype, "device": where}
            cell["detector"] = {"verdict": verdicts.get(dtype, "?"), "chosen": dtype == chosen}
            try:
                cell.update(measure(forced, where, dtype, tokens, reps))
                cell["summary"] = summarise(cell, tokens)
            except RuntimeError as error:  # a worker died: say which, measure the rest
                cell["error"] = str(error)
            cells.append(cell)
    return cells


def summarise(cell: dict[str, Any], tokens: int) -> dict[str, Any]:
    """Medians per side, paired ratios per mode, and the checks that every side did the same."""
    runs: dict[str, list[dict[str, Any]]] = cell["runs"]
    keys = ("decode_tps", "e2e_tps", "ttft_s", "total_s", "main_thread_cpu_s")
    sides = {s: {k: common.median(r[k] for r in runs[s]) for k in keys} for s in runs}
    bare = runs["bare"]
    ratios: dict[str, dict[str, float]] = {}
    for mode in MODES:
        mine = runs[mode]
        ratios[mode] = {
            k: common.paired_ratio([r[k] for r in mine], [r[k] for r in bare]) for k in RATIO_KEYS
        }
    every = [r for side in runs.values() for r in side]
    return {
        "sides": sides,
        "ratios": ratios,
        "new_tokens": sorted({r["new_tokens"] for r in every}),
        "tokens_ok": all(r["new_tokens"] == tokens for r in every),
        "prompt_tokens": sorted({r["prompt_tokens"] for r in every}),
        "same_text": len({r["text_sha"] for r in every}) == 1,
    }


def rows_for(label: str, dtype: str, summary: dict[str, Any], verdict: str) -> list[dict[str, Any]]:
    """Three ratio rows per mode: decode tok/s, end-to-end tok/s, time to first token."""
    sides, rows = summary["sides"], []
    problems = []
    if not summary["tokens_ok"]:
        problems.append(f"token counts differ: {summary['new_tokens']}")
    if len(summary["prompt_tokens"]) > 1:
        problems.append(f"prompt lengths differ: {summary['prompt_tokens']}")
    if not summary["same_text"]:
        problems.append("reply texts differ")
    extra = "; ".join(problems + ([f"detector: {verdict}"] if verdict != "ok" else []))
    for mode in MODES:
        ratio = summary["ratios"][mode]
        for key, metric, unit, scale, target in (
            ("decode_tps", "decode tok/s ratio", "tok/s", 1.0, THROUGHPUT_TARGET),
            ("e2e_tps", "end-to-end tok/s ratio", "tok/s", 1.0, THROUGHPUT_TARGET),
            ("ttft_s", "time to first token ratio", "ms", 1000.0, TTFT_TARGET),
        ):
            mine, base = sides[mode][key] * scale, sides["bare"][key] * scale
            higher = key != "ttft_s"
            met = ratio[key] >= target if higher else ratio[key] <= target
            note = f"{mode} {mine:.3g} {unit} vs bare {base:.3g} {unit} (medians)"
            rows.append(
                common.row(
                    metric,
                    ratio[key],
                    unit="x",
                    model=label,
                    dtype=dtype,
                    mode=mode,
                    target=f"{'>=' if higher else '<='} {target}",
                    met=met and not problems,
                    note=f"{note}; {extra}" if extra else note,
                )
            )
    return rows


def plots(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Decode tok/s and time to first token by model and dtype, one bar per side."""
    tps: dict[str, dict[str, float]] = {s: {} for s in SIDES}
    ttft: dict[str, dict[str, float]] = {s: {} for s in SIDES}
    for cell in cells:
        if "summary" not in cell:
            continue
        where = f"{cell['model']} {cell['dtype']}"
        for side in SIDES:
            tps[side][where] = cell["summary"]["sides"][side]["decode_tps"]
            ttft[side][where] = cell["summary"]["sides"][side]["ttft_s"] * 1000
    return {
        "tokens_per_s": {
            "series": tps,
            "title": "decode tok/s by model and dtype",
            "ylabel": "tok/s",
            "kind": "bar",
            "logy": True,
        },
        "ttft_ms": {
            "series": ttft,
            "title": "time to first token by model and dtype",
            "ylabel": "ms",
            "kind": "bar",
            "logy": True,
        },
    }


def print_table(cells: list[dict[str, Any]], tokens: int, reps: int) -> None:
    print(f"\n{tokens} greedy tokens, {reps} interleaved repetitions: medians, paired ratios")
    print(
        f"{'model':11} {'dtype':9} {'side':8} {'decode tok/s':>12} {'ratio':>6} "
        f"{'e2e tok/s':>10} {'ratio':>6} {'TTFT ms':>8} {'ratio':>6}"
    )
    for cell in cells:
        where = f"{cell['model']:11} {cell['dtype']:9}"
        if "summary" not in cell:
            print(f"{where} FAILED: {cell['error']}")
            continue
        sides, ratios = cell["summary"]["sides"], cell["summary"]["ratios"]
        for side in SIDES:
            s = sides[side]
            r = ratios.get(side)
            dec, e2e, ttft = (f"{r[k]:6.3f}" if r else f"{'':6}" for k in RATIO_KEYS)
            print(
                f"{where} {side:8} {s['decode_tps']:12.1f} {dec} {s['e2e_tps']:10.1f} {e2e} "
                f"{s['ttft_s'] * 1000:8.0f} {ttft}"
            )
        checks = cell["summary"]
        if not checks["tokens_ok"] or not checks["same_text"]:
            print(f"{where} CHECK: tokens {checks['new_tokens']}, same text {checks['same_text']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="detector's dtype only, short")
    parser.add_argument(
        "--models", default=None, help="default demo,tiny-merge (quick: tiny-merge)"
    )
    parser.add_argument("--dtypes", default="", help="override the detector's runnable dtypes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tokens", type=int, default=None, help="default 48 (quick 16)")
    parser.add_argument("--reps", type=int, default=None, help="default 4 (quick 2)")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    tokens = args.tokens or (16 if args.quick else 48)
    reps = args.reps or (2 if args.quick else 4)
    if args.worker:
        worker(args.worker, args.model, args.device, args.dtypes, tokens)
        return 0

    models = args.models or ("tiny-merge" if args.quick else "demo,tiny-merge")
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        cells = measure_all(models, args.dtypes, args.device, args.quick, tokens, reps, Path(tmp))
    summary: list[dict[str, Any]] = []
    for cell in cells:
        if "summary" in cell:
            verdict = str(cell["detector"]["verdict"])
            summary += rows_for(cell["model"], cell["dtype"], cell["summary"], verdict)
        else:
            summary.append(
                common.row(
                    "decode tok/s ratio",
                    float("nan"),
                    unit="x",
                    model=cell["model"],
                    dtype=cell["dtype"],
                    met=False,
                    note=f"failed: {cell['error']}",
                )
            )
    payload = {
        "quick": args.quick,
        "tokens": tokens,
        "reps": reps,
        "prompt": common.PROMPT,
        "summary": summary,
        "runs": cells,
        "plots": plots(cells),
    }
    path = common.write_result("decode_throughput", payload)
    print_table(cells, tokens, reps)
    print(f"wrote {path}")
    return 1 if not cells or any("error" in c for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
