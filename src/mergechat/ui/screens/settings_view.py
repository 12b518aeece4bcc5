"""The settings screen's read-only texts (model facts, verdicts, recommendation) as `Content`.

Everything shown here may quote model files or error messages, so it is built with `Content`
(never parsed as markup) and coloured with theme variables that work in 16 colours too.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.content import Content

from mergechat.core.detect.capabilities import Assessment
from mergechat.core.dtypes import DType
from mergechat.core.model.info import ModelInfo
from mergechat.ui.screens import settings_logic as logic

_VERDICT_STYLES = {"ok": "$text-success", "slow": "$text-warning"}


def model_text(info: ModelInfo | None, error: str | None, *, trusted: bool) -> Content:
    """Model facts, the merge line and up to three warnings; or the inspection error."""
    if info is None:
        return Content.styled(error or "not a model", "$text-error")
    lines = [Content(logic.model_facts(info))]
    merge = logic.merge_facts(info)
    if merge:
        lines.append(Content.styled(merge, "$text-accent"))
    if info.ships_code and not trusted:
        lines.append(
            Content.styled(
                "ships Python code: loads only with 'Trust remote code'", "$text-warning"
            )
        )
    lines += [Content.styled(w, "$text-warning") for w in info.warnings[:3]]
    return Content("\n").join(lines)


def verdict_lines(
    rows: Sequence[logic.VerdictRow],
    device: str | None,
    dtype: DType | None,
    assessment: Assessment | None,
) -> Content:
    """One line per device x dtype: ``▶`` marks the choice, ``★`` the recommendation."""
    rec = assessment.recommendation if assessment else None
    lines = []
    for row in rows:
        chosen = (row.device, row.dtype) == (device, dtype)
        recommended = rec is not None and (rec.device, rec.dtype) == (row.device, row.dtype)
        lines.append(
            Content.assemble(
                ("▶ " if chosen else "  ", "bold"),
                f"{row.device:<8} {row.dtype:<9} ",
                (row.text, _VERDICT_STYLES.get(row.verdict, "$text-error")),
                ("  ★ recommended" if recommended else "", "$text-accent"),
            )
        )
    if not lines:
        return Content.styled("waiting for the detector…", "$text-muted")
    return Content("\n").join(lines)


def recommendation_text(assessment: Assessment | None) -> Content:
    """The recommendation with its reason, then the detector's warnings."""
    if assessment is None:
        return Content("")
    rec = assessment.recommendation
    lines = [
        Content.assemble(("Recommended: ", "bold"), f"{rec.device} · {rec.dtype} — {rec.reason}")
    ]
    lines += [Content.styled(w, "$text-warning") for w in (*rec.warnings, *assessment.warnings)]
    return Content("\n").join(lines)


def choice_text(
    row: logic.VerdictRow | None, device: str | None, dtype: DType | None, reasons: Sequence[str]
) -> Content:
    """What the current choice means: blocked, needs a confirmation, fine, or not judged."""
    if row is not None and row.verdict in logic.BLOCKING:
        return Content.styled(
            f"✗ {row.dtype} on {row.device}: {row.text}. Choose another device or precision.",
            "$text-error",
        )
    if reasons:
        return Content.styled("! " + "; ".join(reasons) + " (Apply asks first)", "$text-warning")
    if row is not None:
        return Content.styled(f"✓ {row.dtype} on {row.device}: {row.text}", "$text-success")
    if device is None or dtype is None:
        return Content.styled("auto: the engine picks when it loads", "$text-muted")
    return Content.styled(f"{dtype} on {device}: not judged yet", "$text-muted")
