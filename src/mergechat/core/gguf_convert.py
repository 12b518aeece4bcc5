"""Convert a GGUF file into a dequantised safetensors model folder, in a child process.

The conversion runs as ``python -m mergechat.core.gguf_convert GGUF OUT`` so the calling
process never runs torch (one thread per process does all torch work: see DESIGN.md) and the
memory of the dequantised copy is returned to the system as soon as it is saved. The child
reports a failure as one JSON object on stdout: ``{"message": ..., "hint": ..., "exit_code": ...}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
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


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """Load ``gguf_file`` dequantised to float32 with its tokenizer and chat template; save both.

    Runs torch: call it in a process of its own (`convert_in_subprocess`).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = gguf_file.parent, gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, **dequantize_kwargs()
    )
    dense = all(p.dtype.is_floating_point for p in model.parameters())
    if not dense or getattr(model, "hf_quantizer", None) is not None:
        raise MergechatError(f"transformers kept {gguf_file.name} quantised; cannot save it dense")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def convert_in_subprocess(gguf_file: Path, out_dir: Path) -> None:
    """Run `convert_gguf` in a child Python; raise its failure as a `MergechatError`."""
    command = [sys.executable, "-m", __name__, str(gguf_file), str(out_dir)]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **_QUIET_ENV}, check=False
    )
    if done.returncode == 0:
        return
    report = _last_json(done.stdout)
    if report is not None:
        kind = BadInputError if report.get("exit_code") == BadInputError.exit_code else None
        error = (kind or MergechatError)(str(report["message"]), report.get("hint"))
        raise error
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    reason = lines[-1].strip() if lines else f"exit code {done.returncode}"
    raise MergechatError(f"converting {gguf_file.name} failed: {reason}")


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "message" in value:
            return value
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mergechat.core.gguf_convert GGUF OUT``: 0 on success, else 1 or 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        sys.stderr.write("usage: python -m mergechat.core.gguf_convert FILE.gguf OUT_DIR\n")
        return 2
    try:
        convert_gguf(Path(args[0]), Path(args[1]))
    except Exception as exc:
        from mergechat.core.error_translation import translate

        error = translate(exc, dtype="float32", device="cpu")
        report = {"message": error.message, "hint": error.hint, "exit_code": error.exit_code}
        sys.stdout.write(json.dumps(report) + "\n")
        return error.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
