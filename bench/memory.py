"""Peak resident memory of mergechat against bare transformers, same model, dtype and reply.

Three kinds of fresh process, each loading the model and answering one prompt with exactly
``--tokens`` greedy tokens (a generation config that forces the length), interleaved over
``--reps`` repetitions:

* ``app``: the real Textual app, headless through ``App.run_test`` with the real engine (the
  prompt is typed into the prompt box and sent with Enter; the reply streams to the screen);
* ``cli``: the real one-shot command, ``python -m mergechat MODEL --prompt ...``;
* ``bare``: ``from_pretrained(dtype=)`` + chat template + ``model.generate``.

Peak RSS is the child's ``ru_maxrss`` from ``wait4`` (the kernel's VmHWM at exit); for the app,
whose model runs in a second process, it is the sum of the UI's and the engine's VmHWM. The app
picks its dtype with ``--dtype auto`` unless given one; the others use the dtype the app loaded.
Config and history go to a temporary folder; the probe cache is the user's.

Usage: python bench/memory.py [--quick] [--model demo] [--reps 2] [--tokens 32] [--dtype auto]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common

KINDS = ("app", "bare", "cli")


# -- workers --------------------------------------------------------------------------------------
async def _wait(pilot: Any, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not get there in time")
        await pilot.pause(0.05)


async def drive_app(model: Path, device: str, dtype: str, tokens: int) -> dict[str, Any]:
    """Start the app on ``model``, send the prompt, wait for the whole reply; what it loaded."""
    from mergechat.ui.app import MergechatApp
    from mergechat.ui.options import AppOptions
    from mergechat.ui.widgets.prompt_input import PromptInput

    overrides = {"max_new_tokens": tokens, "temperature": 0.0}
    options = AppOptions(
        model_path=model, device=device, dtype=dtype, generation_overrides=overrides
    )
    app = MergechatApp(options)
    async with app.run_test(size=(100, 30)) as pilot:
        chat = app.chat
        await _wait(pilot, lambda: chat.phase in ("ready", "error"), 900)
        if chat.phase != "ready" or app.model_state is None:
            raise SystemExit(f"the app did not load the model: {chat.phase}")
        box = chat.query_one(PromptInput)
        box.focus()
        box.text = common.PROMPT
        # The app may resume the last conversation of this model (an earlier run's): count on.
        before = len(chat.conversation.messages)
        await pilot.press("enter")
        await _wait(pilot, lambda: len(chat.conversation.messages) == before + 2, 60)
        await _wait(pilot, lambda: chat.phase == "ready", 900)
        reply = chat.conversation.messages[-1].content
        # The engine runs in its own process: its peak counts too (while it is still alive).
        engines = [common.peak_rss_mib(pid) for pid in _child_pids()]
        return {
            "dtype": app.model_state.dtype,
            "reply_chars": len(reply),
            "engine_mib": sum(engines),
        }


def _child_pids() -> list[int]:
    """This process's live children (the app's engine process)."""
    import psutil

    return [child.pid for child in psutil.Process().children(recursive=True)]


def app_worker(model: Path, device: str, dtype: str, tokens: int) -> None:
    result = asyncio.run(drive_app(model, device, dtype, tokens))
    own = common.peak_rss_mib()
    common.say({**result, "ui_mib": own, "vmhwm_mib": own + result["engine_mib"]})


def bare_worker(model: Path, device: str, dtype: str, tokens: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(model)
    lm: Any = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype))
    lm.eval()
    if device != "cpu":
        lm.to(device)
    messages = [{"role": "user", "content": common.PROMPT}]
    enc: Any = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    ).to(lm.device)
    with torch.inference_mode():
        out = lm.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    new = int(out.shape[-1]) - int(enc["input_ids"].shape[-1])
    common.say({"dtype": dtype, "new_tokens": new, "vmhwm_mib": common.peak_rss_mib()})


# -- parent ---------------------------------------------------------------------------------------
def run_child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``args`` to the end; its peak RSS (MiB), wall time and last protocol line."""
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{args[1:4]} exited with {proc.returncode}:\n{text[-3000:]}")
    said: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith(common.TAG):
            said = json.loads(line[len(common.TAG) :])
    # ru_maxrss is in KiB on Linux. The app's figure is the sum of its two processes' peaks
    # (the UI's and the engine's), which wait4 cannot give: it reports the larger one.
    peak = said.get("vmhwm_mib") if "engine_mib" in said else usage.ru_maxrss / 1024
    return {"peak_mib": peak, "wall_s": wall, **said}


def command(kind: str, model: Path, device: str, dtype: str, tokens: int) -> list[str]:
    if kind == "cli":
        return [
            sys.executable,
            "-m",
            "mergechat",
            str(model),
            "--prompt",
            common.PROMPT,
            "--temperature",
            "0",
            "--max-new-tokens",
            str(tokens),
            "--dtype",
            dtype,
            "--device",
            device,
            "--no-history",
        ]
    return [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--model",
        str(model),
        "--device",
        device,
        "--dtype",
        dtype,
        "--tokens",
        str(tokens),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 rep, 8 tokens")
    parser.add_argument("--model", default="demo", help="demo, tiny-merge or a folder")
    parser.add_argument("--reps", type=int, default=None, help="default 2 (quick: 1)")
    parser.add_argument("--tokens", type=int, default=None, help="default 32 (quick: 8)")
    parser.add_argument("--dtype", default="auto", help="the app's dtype (default: auto)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", choices=("app", "bare"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 2)
    tokens = args.tokens or (8 if args.quick else 32)
    if args.worker:
        worker = app_worker if args.worker == "app" else bare_worker
        worker(Path(args.model), args.device, args.dtype, tokens)
        return 0

    label, source = next(iter(common.resolve_models(args.model).items()))
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        model = common.forced_length_copy(source, Path(tmp) / "models", tokens)
        env = {**os.environ, **common.WORKER_ENV}
        env["MERGECHAT_CONFIG_DIR"] = env["MERGECHAT_DATA_DIR"] = str(Path(tmp) / "home")
        env.pop("MERGECHAT_CONFIG", None)
        dtype = args.dtype
        for rep in range(reps):
            # The app runs first in the first repetition, so its dtype is known before the others.
            for kind in KINDS if rep % 2 == 0 else KINDS[::-1]:
                want = args.dtype if kind == "app" else dtype
                runs[kind].append(run_child(command(kind, model, args.device, want, tokens), env))
                if kind == "app":
                    dtype = runs["app"][-1]["dtype"]
    peak = {kind: common.median(r["peak_mib"] for r in rs) for kind, rs in runs.items()}
    rows = []
    for kind, mode in (("app", "app (run_test)"), ("cli", "one-shot CLI")):
        ratio = peak[kind] / peak["bare"]
        rows.append(
            common.row(
                "peak RSS vs bare",
                peak[kind],
                unit="MiB",
                model=label,
                dtype=dtype,
                mode=mode,
                baseline=peak["bare"],
                note=f"{ratio:.2f}x bare ({peak[kind] - peak['bare']:+.0f} MiB); "
                f"{tokens} tokens, median of {reps} fresh processes",
            )
        )
    print(f"\npeak RSS, {label} in {dtype}, {tokens} new tokens, median of {reps} fresh processes")
    for kind in KINDS:
        print(f"  {kind:<5}{peak[kind]:8.0f} MiB  {peak[kind] / peak['bare']:.2f}x bare")
    plots = {
        "peak_rss_mib": {
            "series": {"peak RSS": [[kind, peak[kind]] for kind in KINDS]},
            "title": f"peak RSS, {label} {dtype}",
            "ylabel": "MiB",
        }
    }
    payload = {"summary": rows, "runs": runs, "plots": plots, "settings": vars(args)}
    print(f"wrote {common.write_result('memory', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
