"""Decode rate and memory against context length and reply length: Engine vs bare ``generate``.

Two worker processes hold the model: mergechat's Engine (the one-shot path: the engine thread
generates, the main thread drains the token stream every 50 ms) and bare transformers
(``from_pretrained`` + chat template + ``model.generate``). For each point (prompt tokens, reply
tokens) both answer the same prompt, greedy, with exactly that many new tokens, interleaved
A B / B A over ``--reps`` repetitions. Each run records the decode rate (first to last new token),
time to first token, and the process's peak RSS during that run (VmHWM, reset through
``/proc/self/clear_refs`` before each run; points run from short to long).

Points: every context length with ``--ctx-reply`` new tokens, then every reply length at the
shortest context. The prompt is filler text cut so the chat-templated prompt has that many tokens.

Usage: python bench/scaling.py [--quick] [--model demo] [--reps 2] [--dtype auto]
           [--contexts 256,512,1024,2048,4096] [--ctx-reply 16] [--replies 32,128,256]
"""

from __future__ import annotations

import argparse
import queue
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

_SENTENCES = (
    "The model merges weights from two parents and keeps what each learned about language.",
    "A fox reads the recipe twice before it writes the config file with care.",
    "Rain falls on the quiet valley while the kettle sings in the kitchen.",
    "Numbers like 42 and 1969 appear beside code such as def run(x): return x + 1.",
    "Every layer adds a little noise, and the merge decides which signal survives.",
    "She packed three maps, a compass and a notebook full of questions.",
)


# -- workers --------------------------------------------------------------------------------------
def prompt_text(tokenizer: Any, tokens: int) -> str:
    """Filler text whose chat-templated user turn is ``tokens`` long (within a token or two)."""
    rng = random.Random(0)
    filler = " ".join(rng.choice(_SENTENCES) for _ in range(tokens // 8 + 8))
    ids = tokenizer(filler, add_special_tokens=False)["input_ids"]

    def length(text: str) -> int:
        enc = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, return_dict=True
        )
        return len(enc["input_ids"])

    keep = max(1, tokens - length(""))
    text = tokenizer.decode(ids[:keep])
    for _ in range(4):  # decode/encode does not always round-trip: nudge towards the target
        off = length(text) - tokens
        if off == 0:
            break
        keep = max(1, keep - off)
        text = tokenizer.decode(ids[:keep])
    return str(text)


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False when not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def engine_side(model: Path, device: str, dtype: str) -> tuple[Any, str]:
    """The Engine (one-shot path) loaded with ``model``: (run(prompt, new), loaded dtype)."""
    from transformers import AutoTokenizer

    from mergechat.core.api import (
        ChatMessage,
        LoadFailed,
        LoadRequest,
        ModelLoaded,
        ReplyFailed,
        ReplyFinished,
        ReplyStarted,
    )
    from mergechat.core.engine.engine import Engine
    from mergechat.core.settings.generation import GenerationSettings

    events: queue.Queue[Any] = queue.Queue()
    engine = Engine(events.put)
    engine.start()
    engine.load(LoadRequest(model, device=device, dtype=dtype))  # type: ignore[arg-type]
    while not isinstance(event := events.get(), ModelLoaded | LoadFailed):
        pass
    if isinstance(event, LoadFailed):
        raise SystemExit(f"load failed: {event.message}")
    tokenizer = AutoTokenizer.from_pretrained(model)  # only to build the prompts

    def run(context: int, new: int) -> dict[str, Any]:
        text = prompt_text(tokenizer, context)
        settings = GenerationSettings(max_new_tokens=new, temperature=0)
        reset = reset_peak()
        engine.generate([ChatMessage("user", text)], settings)
        stream = None
        while True:
            try:
                event = events.get(timeout=0.05)  # the one-shot CLI's drain interval
            except queue.Empty:
                event = None
            if stream is not None:
                stream.drain()
            if isinstance(event, ReplyStarted):
                stream = event.stream
            elif isinstance(event, ReplyFailed):
                raise SystemExit(f"reply failed: {event.message}")
            elif isinstance(event, ReplyFinished):
                stats = event.stats
                return {
                    "prompt_tokens": stats.prompt_tokens,
                    "new_tokens": stats.new_tokens,
                    "decode_tps": stats.decode_tokens_per_s,
                    "ttft_s": stats.ttft_s,
                    "peak_mib": common.peak_rss_mib() if reset else None,
                    "rss_mib": rss_mib(),
                }

    state = engine.state
    return run, state.dtype if state else dtype


def bare_side(model: Path, device: str, dtype: str) -> tuple[Any, str]:
    """Bare transformers with ``model`` in ``dtype``: (run(prompt, new), dtype)."""
    import torch

    tokenizer, lm = common.load_bare(model, dtype, device)

    def run(context: int, new: int) -> dict[str, Any]:
        text = prompt_text(tokenizer, context)
        clock = common.token_clock()
        reset = reset_peak()
        start = time.perf_counter()
        enc: Any = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}],
            add_generation_prompt=True,
            return_dict=True,
            return_tensors="pt",
        ).to(lm.device)
        with torch.inference_mode():
            lm.generate(
                **enc, max_new_tokens=new, min_new_tokens=new, do_sample=False, streamer=clock
            )
        first, last = clock.times[1], clock.times[-1]  # times[0] is the prompt
        made = len(clock.times) - 1
        return {
            "prompt_tokens": int(enc["input_ids"].shape[-1]),
            "new_tokens": made,
            "decode_tps": (made - 1) / (last - first) if made > 1 else 0.0,
            "ttft_s": first - start,
            "peak_mib": common.peak_rss_mib() if reset else None,
            "rss_mib": rss_mib(),
        }

    return run, str(next(lm.parameters()).dtype).removeprefix("torch.")


def worker(side: str, model: Path, device: str, dtype: str) -> None:
    """Serve ``run CONTEXT NEW`` lines after one small untimed warm-up."""
    run, loaded = (engine_side if side == "engine" else bare_side)(model, device, dtype)
    run(64, 4)
    common.say({"ready": True, "dtype": loaded})
    for line in sys.stdin:
        parts = line.split()
        if len(parts) != 3 or parts[0] != "run":
            break
        common.say(run(int(parts[1]), int(parts[2])))


class PointWorker(common.Worker):
    """A worker that runs one (context, reply) point per request."""

    def point(self, context: int, new: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {context} {new}\n")
        self.proc.stdin.flush()
        return self.read()


# -- parent ---------------------------------------------------------------------------------------
def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="contexts 128,512, replies 8,16")
    parser.add_argument("--model", default="demo", help="demo or a folder (needs a long context)")
    parser.add_argument("--reps", type=int, default=None, help="default 2 (quick: 1)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--contexts", default=None, help="default 256,512,1024,2048,4096")
    parser.add_argument("--ctx-reply", type=int, default=None, help="default 16 (quick: 8)")
    parser.add_argument("--replies", default=None, help="default 32,128,256 (quick: 8,16)")
    parser.add_argument("--worker", choices=("engine", "bare"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, Path(args.model), args.device, args.dtype)
        return 0

    reps = args.reps or (1 if args.quick else 2)
    contexts = ints(args.contexts or ("128,512" if args.quick else "256,512,1024,2048,4096"))
    ctx_reply = args.ctx_reply or (8 if args.quick else 16)
    replies = ints(args.replies or ("8,16" if args.quick else "32,128,256"))
    points = [(c, ctx_reply) for c in contexts]
    points += [(contexts[0], n) for n in replies if (contexts[0], n) not in points]

    label, source = next(iter(common.resolve_models(args.model).items()))
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        # min_new_tokens above every reply length: the engine caps it at each request's maximum.
        model = common.forced_length_copy(source, Path(tmp), max(n for _, n in points))
        script = Path(__file__)
        base = ["--model", str(model), "--device", args.device]
        engine = PointWorker("engine", script, ["--worker", "engine", *base, "--dtype", args.dtype])
        dtype = str(engine.ready["dtype"])
        try:
            bare = PointWorker("bare", script, ["--worker", "bare", *base, "--dtype", dtype])
        except BaseException:
            engine.close()
            raise
        workers = {"engine": engine, "bare": bare}
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            f"{c},{n}": {"engine": [], "bare": []} for c, n in points
        }
        try:
            for rep in range(reps):
                for index, (c, n) in enumerate(points):
                    order = ["engine", "bare"] if (rep + index) % 2 == 0 else ["bare", "engine"]
                    for side in order:
                        time.sleep(0.5)  # let the other process's threads go idle
                        runs[f"{c},{n}"][side].append(workers[side].point(c, n))
        finally:
            for w in workers.values():
                w.close()

    table = []
    for c, n in points:
        entry: dict[str, Any] = {"context": c, "reply": n}
        for side in ("engine", "bare"):
            rs = runs[f"{c},{n}"][side]
            entry[side] = {
                "decode_tps": common.median(r["decode_tps"] for r in rs),
                "ttft_s": common.median(r["ttft_s"] for r in rs),
                "peak_mib": max((r["peak_mib"] or 0.0) for r in rs) or None,
                "prompt_tokens": rs[0]["prompt_tokens"],
                "new_tokens": rs[0]["new_tokens"],
            }
        e_tps, b_tps = (runs[f"{c},{n}"][s] for s in ("engine", "bare"))
        entry["paired_ratio"] = common.paired_ratio(
            [r["decode_tps"] for r in e_tps], [r["decode_tps"] for r in b_tps]
        )
        table.append(entry)

    rows = []
    for t in table:
        mode = f"{t['engine']['prompt_tokens']} prompt + {t['reply']} new tokens"
        e, b = t["engine"], t["bare"]
        rows.append(
            common.row(
                "decode rate vs length",
                e["decode_tps"],
                unit="tok/s",
                model=label,
                dtype=dtype,
                mode=mode,
                baseline=b["decode_tps"],
                note=f"engine/bare {t['paired_ratio']:.3f} (paired); "
                f"ttft {e['ttft_s']:.2f}/{b['ttft_s']:.2f} s",
            )
        )
        if e["peak_mib"] and b["peak_mib"]:
            rows.append(
                common.row(
                    "peak RSS vs length",
                    e["peak_mib"],
                    unit="MiB",
                    model=label,
                    dtype=dtype,
                    mode=mode,
                    baseline=b["peak_mib"],
                    note=f"{e['peak_mib'] / b['peak_mib']:.2f}x bare; peak during the run",
                )
            )

    def series(key: str, by: str, fixed: str, value: int) -> dict[str, Any]:
        chosen = [t for t in table if t[fixed] == value]
        data = {
            side: [[t[by], t[side][key]] for t in chosen if t[side][key] is not None]
            for side in ("engine", "bare")
        }
        what = "decode tok/s" if key == "decode_tps" else "peak RSS (MiB)"
        if by == "context":
            title, xlabel = f"{what} vs prompt length ({value} new tokens)", "prompt tokens"
        else:
            title, xlabel = f"{what} vs reply length ({value}-token prompt)", "new tokens"
        return {"series": data, "title": title, "xlabel": xlabel, "ylabel": what, "logx": True}

    plots = {
        "decode_tps_vs_context": series("decode_tps", "context", "reply", ctx_reply),
        "rss_mib_vs_context": series("peak_mib", "context", "reply", ctx_reply),
        "decode_tps_vs_reply": series("decode_tps", "reply", "context", contexts[0]),
        "rss_mib_vs_reply": series("peak_mib", "reply", "context", contexts[0]),
    }
    print(f"\n{label} in {dtype}, median of {reps} interleaved runs per point")
    print(
        f"{'prompt':>7}{'new':>5}{'engine tok/s':>14}{'bare tok/s':>12}{'ratio':>7}"
        f"{'engine MiB':>12}{'bare MiB':>10}"
    )
    for t in table:
        e, b = t["engine"], t["bare"]
        print(
            f"{e['prompt_tokens']:>7}{t['reply']:>5}{e['decode_tps']:>14.1f}{b['decode_tps']:>12.1f}"
            f"{t['paired_ratio']:>7.3f}{e['peak_mib'] or 0:>12.0f}{b['peak_mib'] or 0:>10.0f}"
        )
    payload = {
        "summary": rows,
        "runs": {"table": table, "raw": runs},
        "plots": plots,
        "settings": {"quick": args.quick, "reps": reps, "points": points, "dtype": dtype},
    }
    print(f"wrote {common.write_result('scaling', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
