"""Compare a precision against a reference on a fixed probe text: top-1 agreement, logit drift."""

from __future__ import annotations

from dataclasses import dataclass

from mergechat.core.dtypes import DType

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
