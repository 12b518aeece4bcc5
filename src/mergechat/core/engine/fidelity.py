"""Compare a precision against a reference on a fixed probe text: top-1 agreement, logit drift."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergechat.core.api import FidelityReport
from mergechat.core.dtypes import DType

if TYPE_CHECKING:
    import torch

#: A fixed, mixed text (prose, code, numbers) whose next-token predictions are compared.
PROBE_TEXT = (
    "The quick brown fox jumps over the lazy dog. In 1969, Apollo 11 landed on the Moon; "
    "def add(a, b):\n    return a + b\n"
    "Paris is the capital of France, and 2 + 2 = 4."
)

#: A longer fixed text for ``doctor --fidelity``: prose, code, numbers and a table, so that the
#: activations an audit measures are those of ordinary chat, not of one sentence.
AUDIT_TEXT = (
    "Merging language models has become a hobby and a craft. A merge takes two or more "
    "fine-tuned models that share a base and combines their weights, tensor by tensor, into "
    "one model that keeps some of each. Nothing is trained; the result is saved and shared.\n\n"
    "Precision matters more than it seems. A model stored in bfloat16 keeps float32's range "
    "with fewer digits, while float16 keeps more digits but overflows above 65504. Outliers "
    "that a merge makes can turn into infinity, and one infinity becomes NaN in the next layer.\n\n"
    "def mean(values: list[float]) -> float:\n"
    "    total = 0.0\n"
    "    for value in values:\n"
    "        total += value\n"
    "    return total / len(values)\n\n"
    "| year | event | people |\n"
    "| 1969 | Apollo 11 lands on the Moon | 3 |\n"
    "| 1989 | the Berlin Wall falls | 2,000,000 |\n\n"
    "The answer is 42, pi is about 3.14159, and 2 ** 16 = 65536. "
    "Bonjour, café, naïve, 東京: text in many scripts should survive every precision."
)


def probe_logits(model: Any, tokenizer: Any, text: str = PROBE_TEXT) -> torch.Tensor:
    """Next-token logits of ``model`` at every position of ``text``, as float32 on the CPU.

    Runs one forward pass without gradients (engine thread only: this is torch work).
    """
    import torch

    encoded = tokenizer(text, return_tensors="pt")
    input_ids = encoded["input_ids"].to(model.device)
    with torch.inference_mode():
        logits = model(input_ids=input_ids).logits
    result: torch.Tensor = logits[0].to(device="cpu", dtype=torch.float32)
    return result


def compare_logits(
    reference_logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    reference: DType,
    target: DType,
) -> FidelityReport:
    """Top-1 agreement and max absolute logit difference of two `probe_logits` results."""
    import torch

    agree = (reference_logits.argmax(dim=-1) == target_logits.argmax(dim=-1)).float()
    diff = (reference_logits - target_logits).abs()
    # A non-finite difference (inf/NaN logits) must show as such, not as a small number.
    max_diff = float(diff.max()) if bool(torch.isfinite(diff).all()) else float("inf")
    return FidelityReport(
        reference=reference,
        target=target,
        positions=int(reference_logits.shape[0]),
        top1_agreement=float(agree.mean()),
        max_abs_logit_diff=max_diff,
    )


#: Elements cast to float32 at a time while scanning a weight tensor (bounds the extra memory).
_SCAN_CHUNK = 1 << 22


def largest_weight(files: tuple[Path, ...]) -> tuple[float, str | None]:
    """The largest magnitude of any floating-point tensor in safetensors ``files``, and its name.

    Reads one tensor at a time (``safe_open``) and casts it to float32 in chunks, so memory
    stays at one stored tensor plus a chunk. ``inf`` when a tensor holds inf or NaN.
    """
    from safetensors import safe_open

    best, best_name = 0.0, None
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                value = tensor_abs_max(handle.get_tensor(name))
                if value is not None and (value > best or best_name is None):
                    best, best_name = value, name
    return best, best_name


def parameters_abs_max(model: Any) -> tuple[float, str | None]:
    """The largest magnitude among ``model``'s floating-point parameters, and its name."""
    best, best_name = 0.0, None
    for name, param in model.named_parameters():
        value = tensor_abs_max(param.detach())
        if value is not None and (value > best or best_name is None):
            best, best_name = value, name
    return best, best_name


def tensor_abs_max(tensor: torch.Tensor) -> float | None:
    """Largest magnitude of a floating-point tensor in float32 chunks (inf for inf/NaN)."""
    import torch

    if not tensor.is_floating_point() or tensor.numel() == 0:
        return None
    flat = tensor.reshape(-1)
    best = 0.0
    for start in range(0, flat.numel(), _SCAN_CHUNK):
        chunk = flat[start : start + _SCAN_CHUNK].to(torch.float32)
        if not bool(torch.isfinite(chunk).all()):
            return math.inf
        best = max(best, float(chunk.abs().max()))
    return best
