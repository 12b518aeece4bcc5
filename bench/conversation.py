"""Conversations at full speed: the KV cache kept between turns, and a warm first reply.

(a) Multi-turn: a conversation whose first message has ``--first-tokens`` tokens, then three
short questions, every reply exactly ``--tokens`` greedy tokens (a linked copy of the model whose
generation config forces the length). Two worker processes keep the model loaded:

- ``engine``: the real `Engine` (the kept KV cache: a turn prefills only what is new);
- ``bare``: ``apply_chat_template`` + ``model.generate`` re-prefilling the whole history.

Each run is a new conversation (its first message starts with the run's number, so only the
template's opening tokens are shared with the previous run). Per turn: time to first token.
Reported: engine turn 4 / turn 1 (target <= 0.3) and engine turn 4 / bare turn 4 (paired).

(b) Warm start: the first reply of a fresh one-shot process (``python -m mergechat PATH
--prompt TEXT --json``: its ``ttft_s`` and ``decode_tokens_per_s``) against a warm reply of a
long-lived engine process (no kept cache), interleaved. Targets: TTFT <= 1.3x, decode >= 0.9x.

Usage: python bench/conversation.py [--quick] [--model demo] [--dtype float32] [--device cpu]
                                    [--first-tokens 900] [--tokens 16] [--reps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

QUESTIONS = ("And in one sentence?", "Why is that?", "Thanks. Anything else?")
PARAGRAPH = (
    "Model merging combines the weights of several fine-tuned language models into one model "
    "without further training. Methods such as linear averaging, SLERP, TIES and DARE trade "
    "off how much of each parent's task vector survives. "
)
TURN_TARGET = 0.3
TTFT_TARGET = 1.3
DECODE_TARGET = 0.9


def first_message(tokenizer: Any, run: int, tokens: int) -> str:
    """About ``tokens`` tokens of text, opening with the run number (a new conversation)."""
    text = f"Conversation {run}. "
    while len(tokenizer(text)["input_ids"]) < tokens:
        text += PARAGRAPH
    return text + "Summarise this."


# -- worker side --------------------------------------------------------------------------------
class Chat:
    """A real `Engine` with its events in a queue; one reply at a time."""

    def __init__(self, model: Path, device: str, dtype: str, *, reuse: bool) -> None:
        from mergechat.core.api import LoadFailed, LoadRequest, ModelLoaded
        from mergechat.core.engine.engine import Engine

        self.events: queue.Queue[Any] = queue.Queue()
        self.engine = Engine(self.events.put, reuse_cache=reuse)
        self.engine.start()
        self.engine.load(LoadRequest(model, device=device, dtype=dtype))  # type: ignore[arg-type]
        event = self.wait(ModelLoaded, LoadFailed)
        if isinstance(event, LoadFailed):
            raise SystemExit(f"load failed: {event.message}")
        self.state = event.state

    def wait(self, *kinds: type) -> Any:
        while not isinstance(event := self.events.get(timeout=600), kinds):
            pass
        return event

    def reply(self, messages: list[Any], tokens: int) -> Any:
        from mergechat.core.api import ReplyFailed, ReplyFinished
        from mergechat.core.settings.generation import GenerationSettings

        self.engine.generate(messages, GenerationSettings(max_new_tokens=tokens, temperature=0))
        event = self.wait(ReplyFinished, ReplyFailed)
        if isinstance(event, ReplyFailed):
            raise SystemExit(f"reply failed: {event.message}")
        return event


def engine_worker(model: Path, device: str, dtype: str, first: int, tokens: int) -> None:
    from app_driver import text_digest
    from transformers import AutoTokenizer

    from mergechat.core.api import ChatMessage

    chat = Chat(model, device, dtype, reuse=True)
    tokenizer = AutoTokenizer.from_pretrained(model)
    count = iter(range(1_000_000))

    def run() -> dict[str, Any]:
        messages = [ChatMessage("user", first_message(tokenizer, next(count), first))]
        ttft, cached, prompt, texts = [], [], [], []
        for question in (None, *QUESTIONS):
            if question is not None:
                messages.append(ChatMessage("user", question))
            finished = chat.reply(messages, tokens)
            messages.append(ChatMessage("assistant", finished.text))
            ttft.append(finished.stats.ttft_s)
            cached.append(finished.stats.cached_tokens)
            prompt.append(finished.stats.prompt_tokens)
            texts.append(finished.text)
        return {
            "ttft_s": ttft,
            "cached": cached,
            "prompt": prompt,
            "sha": text_digest("\n".join(texts)),
        }

    common.serve(run, {"dtype": chat.state.dtype})


def bare_worker(model: Path, device: str, dtype: str, first: int, tokens: int) -> None:
    from app_driver import text_digest

    tokenizer, lm = common.load_bare(model, dtype, device)
    count = iter(range(1_000_000))

    def run() -> dict[str, Any]:
        messages = [{"role": "user", "content": first_message(tokenizer, next(count), first)}]
        ttft, prompt, texts = [], [], []
        for question in (None, *QUESTIONS):
            if question is not None:
                messages.append({"role": "user", "content": question})
            clock = common.token_clock()
            start = time.perf_counter()
            enc: Any = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
            ).to(device)
            out = lm.generate(**enc, max_new_tokens=tokens, do_sample=False, streamer=clock)
            length = int(enc["input_ids"].shape[-1])
            text = tokenizer.decode(out[0, length:], skip_special_tokens=True)
            messages.append({"role": "assistant", "content": text})
            ttft.append(clock.times[1] - start)
            prompt.append(length)
            texts.append(text)
        return {
            "ttft_s": ttft,
            "cached": [0] * len(ttft),
            "prompt": prompt,
            "sha": text_digest("\n".join(texts)),
        }

    common.serve(run, {"dtype": str(next(lm.parameters()).dtype).removeprefix("torch.")})


def warm_worker(model: Path, device: str, dtype: str, tokens: int) -> None:
    """A long-lived engine (no kept cache) answering the one-shot prompt: the warm reply."""
    from mergechat.core.api import ChatMessage

    chat = Chat(model, device, dtype, reuse=False)

    def run() -> dict[str, Any]:
        stats = chat.reply([ChatMessage("user", common.PROMPT)], tokens).stats
        return {"ttft_s": stats.ttft_s, "decode_tps": stats.decode_tokens_per_s}

    common.serve(run, {"dtype": chat.state.dtype})


class FreshOneShot:
    """Parent side: each run is a new ``python -m mergechat PATH --prompt ... --json`` process."""

    def __init__(self, model: Path, device: str, dtype: str, tokens: int) -> None:
        self.command = [
            sys.executable, "-m", "mergechat", str(model), "--prompt", common.PROMPT, "--json",
            "--device", device, "--dtype", dtype, "--max-new-tokens", str(tokens),
            "--temperature", "0", "--no-history",
        ]  # fmt: skip
        self.ready: dict[str, Any] = {}

    def run(self) -> dict[str, Any]:
        env = {**os.environ, **common.WORKER_ENV}
        done = subprocess.run(self.command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"one-shot exited with {done.returncode}: {done.stderr[-500:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        return {"ttft_s": result["ttft_s"], "decode_tps": result["decode_tokens_per_s"]}

    def close(self) -> None:
        pass


# -- parent side --------------------------------------------------------------------------------
def start(side: str, model: Path, args: argparse.Namespace) -> common.Worker:
    return common.Worker(
        side,
        Path(__file__),
        ["--worker", side, "--model-path", str(model), "--device", args.device,
         "--dtype", args.dtype, "--first-tokens", str(args.first_tokens),
         "--tokens", str(args.tokens)],
    )  # fmt: skip


def measure(model: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Both parts, each interleaved; the workers are stopped afterwards."""
    result: dict[str, Any] = {}
    workers = {side: start(side, model, args) for side in ("engine", "bare")}
    try:
        result["turns"] = common.interleave(workers, args.reps)  # type: ignore[arg-type]
    finally:
        for worker in workers.values():
            worker.close()
    warm = start("warm", model, args)
    try:
        pair = {"fresh": FreshOneShot(model, args.device, args.dtype, args.tokens), "warm": warm}
        result["first_reply"] = common.interleave(pair, args.reps)  # type: ignore[arg-type]
    finally:
        warm.close()
    return result


def summarise(result: dict[str, Any], label: str, dtype: str) -> list[dict[str, Any]]:
    engine, bare = result["turns"]["engine"], result["turns"]["bare"]
    same = {r["sha"] for r in engine} == {r["sha"] for r in bare}
    turn = [common.median(r["ttft_s"][i] for r in engine) for i in range(4)]
    bare_turn = [common.median(r["ttft_s"][i] for r in bare) for i in range(4)]
    own = common.median(r["ttft_s"][3] / r["ttft_s"][0] for r in engine)
    vs_bare = common.paired_ratio([r["ttft_s"][3] for r in engine], [r["ttft_s"][3] for r in bare])
    cached = common.median(r["cached"][3] for r in engine)
    prompt = engine[0]["prompt"]
    note = "" if same else "; reply texts differ from bare"
    fresh, warm = result["first_reply"]["fresh"], result["first_reply"]["warm"]
    ttft = common.paired_ratio([r["ttft_s"] for r in fresh], [r["ttft_s"] for r in warm])
    decode = common.paired_ratio([r["decode_tps"] for r in fresh], [r["decode_tps"] for r in warm])
    kw = {"unit": "x", "model": label, "dtype": dtype}
    return [
        common.row(
            "turn 4 / turn 1 time to first token", own, **kw, mode="engine",
            baseline=turn[0] * 1000, target=f"<= {TURN_TARGET}", met=own <= TURN_TARGET and same,
            note=f"turn 1 {turn[0] * 1000:.0f} ms, turn 4 {turn[3] * 1000:.0f} ms "
            f"({cached:.0f} of {prompt[3]} prompt tokens reused){note}",
        ),
        common.row(
            "turn 4 time to first token vs bare re-prefill", vs_bare, **kw, mode="engine",
            baseline=bare_turn[3] * 1000,
            note=f"engine {turn[3] * 1000:.0f} ms vs bare {bare_turn[3] * 1000:.0f} ms{note}",
        ),
        common.row(
            "first reply time to first token vs warm", ttft, **kw, mode="oneshot",
            target=f"<= {TTFT_TARGET}", met=ttft <= TTFT_TARGET,
            note=f"fresh {common.median(r['ttft_s'] for r in fresh) * 1000:.0f} ms vs warm "
            f"{common.median(r['ttft_s'] for r in warm) * 1000:.0f} ms",
        ),
        common.row(
            "first reply decode tok/s vs warm", decode, **kw, mode="oneshot",
            target=f">= {DECODE_TARGET}", met=decode >= DECODE_TARGET,
            note=f"fresh {common.median(r['decode_tps'] for r in fresh):.1f} vs warm "
            f"{common.median(r['decode_tps'] for r in warm):.1f} tok/s",
        ),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny merge, short, 2 reps")
    parser.add_argument("--model", default=None, help="default demo (quick: tiny-merge)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--first-tokens", type=int, default=None, help="default 900 (quick 200)")
    parser.add_argument("--tokens", type=int, default=None, help="default 16 (quick 8)")
    parser.add_argument("--reps", type=int, default=None, help="default 4 (quick 2)")
    parser.add_argument("--worker", choices=("engine", "bare", "warm"), help=argparse.SUPPRESS)
    parser.add_argument("--model-path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.first_tokens = args.first_tokens or (200 if args.quick else 900)
    args.tokens = args.tokens or (8 if args.quick else 16)
    args.reps = args.reps or (2 if args.quick else 4)
    if args.worker:
        where = (args.model_path, args.device, args.dtype)
        if args.worker == "engine":
            engine_worker(*where, args.first_tokens, args.tokens)
        elif args.worker == "bare":
            bare_worker(*where, args.first_tokens, args.tokens)
        else:
            warm_worker(*where, args.tokens)
        return 0

    label = args.model or ("tiny-merge" if args.quick else "demo")
    model = common.resolve_models(label)[label]
    with tempfile.TemporaryDirectory(prefix="bench-conversation-") as tmp:
        os.environ.update(
            MERGECHAT_CONFIG_DIR=str(Path(tmp) / "config"),
            MERGECHAT_DATA_DIR=str(Path(tmp) / "data"),
            TRANSFORMERS_VERBOSITY="error",
        )
        forced = common.forced_length_copy(model, Path(tmp) / "models", args.tokens)
        print(f"conversation: {label} {args.dtype} on {args.device} ...", file=sys.stderr)
        result = measure(forced, args)
    summary = summarise(result, label, args.dtype)
    payload = {
        "quick": args.quick,
        "first_tokens": args.first_tokens,
        "tokens": args.tokens,
        "reps": args.reps,
        "summary": summary,
        "runs": result,
    }
    path = common.write_result("conversation", payload)
    for row in summary:
        print(f"{row['metric']:48} {row['value']:7.3f}x  {row['target']:8} {row['note']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
