"""Convert a GGUF file into a dequantised safetensors model folder, in a child process.

The conversion runs as ``python -m mergechat.core.engine.gguf_convert GGUF OUT`` so the calling
process never runs torch (one thread per process does all torch work) and the
memory of the dequantised copy is returned to the system as soon as it is saved. The child
reports each step as ``{"step": ...}`` and a failure as ``{"message": ..., "hint": ...,
"exit_code": ...}``, one JSON object a line on stdout; the parent passes the steps on, with the
seconds spent, while it waits.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mergechat.core.errors import BadInputError, MergechatError

#: Quiet transformers, hub and tqdm output in the child (tqdm reads its env at import time).
_QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_OFFLINE": "1",
    "TQDM_DISABLE": "1",
}


def dequantize_kwargs() -> dict[str, Any]:
    """``from_pretrained`` arguments that unpack every GGUF weight into a dense tensor.

    Recent transformers can keep some architectures' weights packed (``GgufLinear``) when the
    ``kernels`` package is installed; mergechat's memory fit, dtype switches and saving all
    assume dense weights, so it always asks for the dequantised model.
    """
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers 5 releases always dequantise
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


Step = Callable[[str], None]
#: Seconds between "still ..." lines while one step runs.
HEARTBEAT_S = 10.0


def convert_gguf(gguf_file: Path, out_dir: Path, step: Step | None = None) -> None:
    """Load ``gguf_file`` dequantised to float32 with its tokenizer and chat template; save both.

    Runs torch: call it in a process of its own (`convert_in_subprocess`). ``step`` hears of each
    stage as it starts.
    """
    say: Step = step or (lambda _text: None)
    say("loading torch and transformers")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = gguf_file.parent, gguf_file.name
    say("reading the tokenizer and chat template")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    say("reading and dequantising the weights (the longest step)")
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, **dequantize_kwargs()
    )
    dense = all(p.dtype.is_floating_point for p in model.parameters())
    if not dense or getattr(model, "hf_quantizer", None) is not None:
        raise MergechatError(f"transformers kept {gguf_file.name} quantised; cannot save it dense")
    say("saving the safetensors model")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def convert_in_subprocess(gguf_file: Path, out_dir: Path, progress: Step | None = None) -> None:
    """Run `convert_gguf` in a child Python; raise its failure as a `MergechatError`.

    ``progress`` gets a line as each step starts and every `HEARTBEAT_S` while one runs, each with
    the seconds spent so far.
    """
    report_line: Step = progress or (lambda _line: None)
    command = [sys.executable, "-m", __name__, str(gguf_file), str(out_dir)]
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **_QUIET_ENV},
    )
    lines: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []
    readers = [
        threading.Thread(target=_pump, args=(child.stdout, lines.put), daemon=True),
        threading.Thread(target=_pump, args=(child.stderr, stderr.append), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        stdout = _follow(lines, report_line)
    except BaseException:  # ctrl+c while waiting: the child does not outlive the command
        child.kill()
        raise
    returncode = child.wait()
    for reader in readers:
        reader.join()
    if returncode == 0:
        return
    report = _last_json(stdout)
    if report is not None:
        kind = BadInputError if report.get("exit_code") == BadInputError.exit_code else None
        error = (kind or MergechatError)(str(report["message"]), report.get("hint"))
        raise error
    tail = [line for line in "".join(stderr).splitlines() if line.strip()]
    reason = tail[-1].strip() if tail else f"exit code {returncode}"
    raise MergechatError(f"converting {gguf_file.name} failed: {reason}")


def _pump(stream: Any, put: Callable[[Any], None]) -> None:
    """Pass each line of ``stream`` to ``put``; None after the last (stdout's end)."""
    for line in stream:
        put(line)
    stream.close()
    put(None)


def _follow(lines: queue.Queue[str | None], report_line: Step) -> str:
    """Report the child's steps (and a "still" line while one lasts) until its stdout ends."""
    started = time.monotonic()
    current = "starting"
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=HEARTBEAT_S)
        except queue.Empty:
            report_line(f"still {current} ({time.monotonic() - started:.0f} s so far)")
            continue
        if line is None:
            return "".join(seen)
        seen.append(line)
        step = _step_of(line)
        if step is not None:
            current = step
            report_line(f"{step} ({time.monotonic() - started:.0f} s so far)")


def _step_of(line: str) -> str | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return str(value["step"]) if isinstance(value, dict) and "step" in value else None


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "message" in value:
            return value
    return None


def _print_step(text: str) -> None:
    sys.stdout.write(json.dumps({"step": text}) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mergechat.core.engine.gguf_convert GGUF OUT``: 0 on success, else 1 or 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        sys.stderr.write("usage: python -m mergechat.core.engine.gguf_convert FILE.gguf OUT_DIR\n")
        return 2
    try:
        convert_gguf(Path(args[0]), Path(args[1]), _print_step)
    except Exception as exc:
        from mergechat.core.engine.error_translation import translate

        error = translate(exc, dtype="float32", device="cpu")
        report = {"message": error.message, "hint": error.hint, "exit_code": error.exit_code}
        sys.stdout.write(json.dumps(report) + "\n")
        return error.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
