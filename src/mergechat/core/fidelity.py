"""Compare a precision against a reference on a fixed probe text: top-1 agreement, logit drift."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mergechat.core.dtypes import DType

if TYPE_CHECKING:
    import torch

#: A fixed, mixed text (prose, code, numbers) whose next-token predictions are compared.
PROBE_TEXT = (
    "The quick brown fox jumps over the lazy dog. In 1969, Apollo 11 landed on the Moon; "
    "def add(a, b):\n    return a + b\n"
    "Paris is the capital of France, and 2 + 2 = 4."
)


@dataclass(frozen=True)
class FidelityReport:
    """How closely ``target`` reproduces ``reference`` on `PROBE_TEXT`."""

    reference: DType
    target: DType
    positions: int
    #: Fraction (0..1) of positions whose top-1 next token is the same in both precisions.
    top1_agreement: float
    max_abs_logit_diff: float

    def summary(self) -> str:
        """One line for a notification, e.g. ``float32 vs bfloat16: 97.1% top-1 agreement``."""
        return (
            f"{self.target} vs {self.reference}: {self.top1_agreement * 100:.1f}% top-1 "
            f"agreement over {self.positions} tokens, max logit diff {self.max_abs_logit_diff:.3g}"
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


def measure_fidelity(
    model: Any,
    tokenizer: Any,
    reference_logits: torch.Tensor,
    *,
    reference: DType,
    target: DType,
) -> FidelityReport:
    """Run `PROBE_TEXT` through ``model`` (now in ``target``) and compare with the reference."""
    current = probe_logits(model, tokenizer)
    return compare_logits(reference_logits, current, reference=reference, target=target)
