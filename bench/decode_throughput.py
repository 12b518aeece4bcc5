"""Decode tokens/s of mergechat's Engine (one-shot path) against bare ``model.generate``.

Same model, dtype, prompt and greedy decoding on both sides, a fixed token count
(``min_new_tokens == max_new_tokens``). Each side runs in its own worker process (so the bare
side's torch has its own thread pools and never shares a process with the engine thread); the
parent interleaves them A B A B over several repetitions and reports medians. Both sides time
tokens the same way: request to last token, and first to last token (the bare side records token
times with a streamer that does nothing else).

The model is a random ``LlamaForCausalLM`` shaped like SmolLM2-135M with the tests' tiny trained
tokenizer, built once into mergechat's cache dir.

Usage: python bench/decode_throughput.py [--dtypes float32,bfloat16,float16] [--reps 5]
                                         [--tokens 128] [--model-dir DIR] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROMPT = "Write a short story about a fox who learns to merge language models."
SMOLLM2_135M: dict[str, Any] = {
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
#: Protocol lines between parent and workers start with this (anything else is library noise).
TAG = "@@bench "
TARGET_RATIO = 0.97


# -- model --------------------------------------------------------------------------------------
def build_model(folder: Path) -> Path:
    """Save the random SmolLM2-135M-shaped model (bfloat16, like the original) once."""
    if (folder / "model.safetensors").exists():
        return folder
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(REPO / "tests"))
    from fixtures.tiny_models import build_tokenizer  # type: ignore[import-not-found]

    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer(folder)
    torch.manual_seed(0)
    model: Any = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    model.to(torch.bfloat16)
    model.config.dtype = "bfloat16"
    model.save_pretrained(folder)
    return folder


def set_token_count(folder: Path, tokens: int) -> None:
    """generation_config.json: greedy, exactly ``tokens`` new tokens (the engine reads it)."""
    config = {
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "do_sample": False,
        "max_new_tokens": tokens,
        "min_new_tokens": tokens,
    }
    (folder / "generation_config.json").write_text(json.dumps(config, indent=1))


# -- workers (one process per side) ----------------------------------------------------------
def _say(payload: dict[str, Any]) -> None:
    sys.stdout.write(TAG + json.dumps(payload) + "\n")
    sys.stdout.flush()


def engine_worker(model: Path, dtype: str, tokens: int) -> None:
    """The one-shot CLI path: Engine thread generates, this (main) thread drains the stream."""
    from mergechat.core.api import (
        ChatMessage,
        GenerationSettings,
        LoadFailed,
        LoadRequest,
        ModelLoaded,
        ReplyFailed,
        ReplyFinished,
        ReplyStarted,
    )
    from mergechat.core.engine import Engine

    events: queue.Queue[Any] = queue.Queue()
    engine = Engine(events.put)
    engine.start()
    engine.load(LoadRequest(model, device="cpu", dtype=dtype))  # type: ignore[arg-type]
    while not isinstance(event := events.get(), ModelLoaded | LoadFailed):
        pass
    if isinstance(event, LoadFailed):
        raise SystemExit(f"load failed: {event.message}")
    settings = GenerationSettings(max_new_tokens=tokens, temperature=0)

    def run() -> dict[str, Any]:
        engine.generate([ChatMessage("user", PROMPT)], settings)
        stream = None
        text = ""
        while True:
            try:
                event = events.get(timeout=0.05)  # the CLI's drain interval
            except queue.Empty:
                event = None
            if stream is not None:
                text += stream.drain()
            if isinstance(event, ReplyStarted):
                stream = event.stream
            elif isinstance(event, ReplyFailed):
                raise SystemExit(f"reply failed: {event.message}")
            elif isinstance(event, ReplyFinished):
                if stream is not None:
                    text += stream.drain()
                stats = event.stats
                return {
                    "new_tokens": stats.new_tokens,
                    "total_s": stats.total_s,
                    "ttft_s": stats.ttft_s,
                    "decode_tps": stats.decode_tokens_per_s,
                    "e2e_tps": stats.new_tokens / stats.total_s,
                    "text": event.text,
                    "drained_equals_final": text == event.text,
                    "dtype": stats.dtype,
                }

    _serve(run, real_dtype=lambda: engine.state.dtype if engine.state else "?")
    engine.shutdown()


def bare_worker(model: Path, dtype: str, tokens: int) -> None:
    """Plain transformers on the main thread: apply_chat_template + model.generate.

    The only addition is a streamer that records the time of each token (no decoding), so the
    first-to-last-token decode time is measured exactly as the engine measures it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):  # type: ignore[misc]
        def __init__(self) -> None:
            self.times: list[float] = []

        def put(self, value: Any) -> None:
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    tokenizer: Any = AutoTokenizer.from_pretrained(model)
    lm: Any = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype))
    lm.eval()
    messages = [{"role": "user", "content": PROMPT}]

    def run() -> dict[str, Any]:
        clock = Clock()
        start = time.perf_counter()
        enc: Any = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        out = lm.generate(
            **enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, streamer=clock
        )
        prompt_len = int(enc["input_ids"].shape[-1])
        new = int(out.shape[-1]) - prompt_len
        first, last = clock.times[1], clock.times[-1]  # times[0] is the prompt
        return {
            "new_tokens": new,
            "total_s": last - start,
            "ttft_s": first - start,
            "decode_tps": (new - 1) / (last - first),
            "e2e_tps": new / (last - start),
            "text": tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True),
        }

    _serve(run, real_dtype=lambda: str(next(lm.parameters()).dtype).removeprefix("torch."))


def _serve(run: Any, real_dtype: Any) -> None:
    run()  # warm-up, untimed
    _say({"ready": True, "dtype": real_dtype()})
    for line in sys.stdin:
        if line.strip() != "run":
            break
        _say(run())


class Worker:
    """A worker process driven line by line from the parent."""

    def __init__(self, side: str, model: Path, dtype: str, tokens: int) -> None:
        self.side = side
        cmd = [sys.executable, __file__, "--worker", side, "--model-dir", str(model)]
        cmd += ["--dtypes", dtype, "--tokens", str(tokens)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        # The bare side gets the engine's loading setting too, so it is at its best.
        env["HF_DEACTIVATE_ASYNC_LOAD"] = "1"
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.ready = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(TAG):
                result: dict[str, Any] = json.loads(line[len(TAG) :])
                return result
        raise RuntimeError(f"{self.side} worker exited with {self.proc.wait()}")

    def run(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(60)


# -- parent ---------------------------------------------------------------------------------------
def measure(model: Path, dtype: str, tokens: int, reps: int) -> dict[str, Any]:
    """Interleave engine and bare runs (A B A B ...) and return medians and raw runs."""
    workers = {side: Worker(side, model, dtype, tokens) for side in ("engine", "bare")}
    runs: dict[str, list[dict[str, Any]]] = {"engine": [], "bare": []}
    try:
        for rep in range(reps):
            order = ("engine", "bare") if rep % 2 == 0 else ("bare", "engine")
            for side in order:
                time.sleep(0.5)  # let the other process's OpenMP threads go idle
                runs[side].append(workers[side].run())
    finally:
        for worker in workers.values():
            worker.close()
    summary: dict[str, Any] = {"dtype": dtype, "tokens": tokens, "reps": reps}
    for side, results in runs.items():
        summary[side] = {
            "real_dtype": workers[side].ready["dtype"],
            "e2e_tps": statistics.median(r["e2e_tps"] for r in results),
            "decode_tps": statistics.median(r["decode_tps"] for r in results),
            "new_tokens": sorted({r["new_tokens"] for r in results}),
            "runs": [{k: v for k, v in r.items() if k != "text"} for r in results],
        }
    summary["ratio_e2e"] = summary["engine"]["e2e_tps"] / summary["bare"]["e2e_tps"]
    summary["ratio_decode"] = summary["engine"]["decode_tps"] / summary["bare"]["decode_tps"]
    # Adjacent runs share the machine's state, so the median of per-pair ratios resists noise
    # from other processes better than the ratio of medians.
    summary["paired_ratio_decode"] = statistics.median(
        e["decode_tps"] / b["decode_tps"] for e, b in zip(runs["engine"], runs["bare"], strict=True)
    )
    summary["same_text"] = runs["engine"][0]["text"] == runs["bare"][0]["text"]
    summary["drained_equals_final"] = all(r["drained_equals_final"] for r in runs["engine"])
    return summary


def machine() -> dict[str, Any]:
    import torch
    import transformers

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="float32,bfloat16,float16")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--worker", choices=("engine", "bare"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        worker = engine_worker if args.worker == "engine" else bare_worker
        worker(args.model_dir, args.dtypes, args.tokens)
        return 0

    from mergechat.core import locations

    model = build_model(args.model_dir or locations.cache_dir() / "bench" / "smollm2-135m-random")
    set_token_count(model, args.tokens)
    load_before = os.getloadavg()
    results = [measure(model, d, args.tokens, args.reps) for d in args.dtypes.split(",")]
    report = {
        "machine": machine(),
        # Other processes on the machine skew every figure: keep the evidence.
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "model": str(model),
        "prompt": PROMPT,
        "results": results,
    }

    print(f"\n{args.tokens} greedy tokens, median of {args.reps} interleaved runs")
    columns = f"{'engine':>8} {'bare':>8} {'ratio':>6}"
    print(f"{'':9} {'request-to-last tok/s':^24}   {'decode tok/s (1st-last)':^24}")
    print(f"{'dtype':9} {columns}   {columns} {'paired':>6}")
    ok = True
    for r in results:
        e, b = r["engine"], r["bare"]
        print(
            f"{r['dtype']:9} {e['e2e_tps']:8.1f} {b['e2e_tps']:8.1f} {r['ratio_e2e']:6.3f}   "
            f"{e['decode_tps']:8.1f} {b['decode_tps']:8.1f} {r['ratio_decode']:6.3f} "
            f"{r['paired_ratio_decode']:6.3f}"
            f"{'' if r['same_text'] else '  (texts differ!)'}"
        )
        ok = ok and min(r["ratio_e2e"], r["ratio_decode"]) >= TARGET_RATIO
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"decode_throughput-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    print(f"target ratio >= {TARGET_RATIO}: {'met' if ok else 'NOT met'}; wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
