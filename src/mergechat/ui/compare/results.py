"""What a column says after an answer: agreement with the merge's reply, where the reply parts
from the base model's, how long its load took (plain lines; the column escapes and styles them)."""

from __future__ import annotations

from mergechat.core.compare.events import ModelResult


def result_lines(result: ModelResult, *, reference: str, role: str) -> list[str]:
    """The lines for ``result``. ``reference`` names the model whose reply agreement is scored
    against (the merge); ``role`` is "reference", "base" (divergence is measured from its reply)
    or "" for the others."""
    if result.error or not result.reply:
        return []
    lines: list[str] = []
    if role == "reference":
        lines.append("the reference: the others are scored against this reply")
    elif result.agreement is not None:
        lines.append(f"top-1 agreement with {reference}: {result.agreement:.1%}")
    elif result.agreement_note:
        lines.append(f"agreement: {result.agreement_note}")
    if role == "base":
        lines.append("the base: the others are compared with this reply")
    elif result.divergence is not None:
        lines.append(result.divergence.describe())
    if result.load_s is not None:
        lines.append(f"loaded in {result.load_s:.1f} s")
    return lines
