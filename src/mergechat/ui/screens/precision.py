"""`PrecisionScreen` (ctrl+t / F3): pick float32, bfloat16 or float16 by arrow keys or 1, 2, 3."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from mergechat.core.dtypes import DTYPES, DType
from mergechat.ui.verdicts import ShownVerdict

_STYLES = {"ok": "$text-success", "slow": "$text-warning"}
_NOT_MEASURED = ShownVerdict(None, "not measured")


def _verdict_style(verdict: ShownVerdict) -> str:
    if verdict.blocked:
        return "$text-error"
    return _STYLES.get(verdict.kind or "", "$text-muted")


class PrecisionScreen(ModalScreen[DType | None]):
    """Dismisses with the chosen `DType`, or None on Escape. Unusable ones explain why.

    ``after_reply``: a reply is streaming, so a choice waits for it; ``queued`` is the switch
    already waiting (marked, and Escape cancels it).
    """

    CSS_PATH = "../styles/precision.tcss"
    AUTO_FOCUS = "#precision-options"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="precision.cancel"),
        *(
            Binding(str(n), f"choose({n - 1})", dtype, show=False, id=f"precision.{dtype}")
            for n, dtype in enumerate(DTYPES, 1)
        ),
    ]

    def __init__(
        self,
        current: DType | None,
        verdicts: Mapping[DType, ShownVerdict],
        *,
        queued: DType | None = None,
        after_reply: bool = False,
    ) -> None:
        super().__init__()
        self._current = current
        self._verdicts = dict(verdicts)
        self._queued = queued
        self._after_reply = after_reply or queued is not None

    def compose(self) -> ComposeResult:
        with Vertical(id="precision-dialog"):
            yield Static(self._title(), id="precision-title")
            yield OptionList(
                *(self._option(n, d) for n, d in enumerate(DTYPES, 1)), id="precision-options"
            )
            yield Static("", id="precision-notice")
            yield Static(Content.styled(self._help(), "$text-muted"), id="precision-help")

    def _title(self) -> str:
        if self._queued is not None:
            return f"Precision: switching to {self._queued} after this reply"
        return "Precision: a choice waits for this reply" if self._after_reply else "Precision"

    def _help(self) -> str:
        if self._queued is not None:
            return "1-3 or ↑↓ Enter: switch after this reply · Esc: cancel the switch"
        if self._after_reply:
            return "1-3 or ↑↓ Enter: switch after this reply · Esc: close"
        return "1-3 or ↑↓ Enter: switch · Esc: cancel"

    def _option(self, number: int, dtype: DType) -> Option:
        verdict = self._verdicts.get(dtype, _NOT_MEASURED)
        current = dtype == self._current
        prompt = Content.assemble(
            (f"{number} ", "bold $text-accent"),
            ("● " if current else "  ", "$text-primary"),
            (f"{dtype:<9} ", "bold" if current else ""),
            (verdict.text, _verdict_style(verdict)),
            ("  (current)" if current else "", "$text-muted"),
            ("  (after this reply)" if dtype == self._queued else "", "$text-accent"),
        )
        return Option(prompt, id=dtype)

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        shown = self._queued or self._current
        options.highlighted = DTYPES.index(shown) if shown in DTYPES else 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_choose(event.option_index)

    def action_choose(self, index: int) -> None:
        """Choose the precision at ``index`` (0: float32, 1: bfloat16, 2: float16)."""
        dtype = DTYPES[index]
        self.query_one(OptionList).highlighted = index
        verdict = self._verdicts.get(dtype, _NOT_MEASURED)
        if verdict.blocked:
            notice = self.query_one("#precision-notice", Static)
            reason = f"{dtype} cannot be used here: {verdict.text}"
            notice.update(Content.styled(reason, "$text-error"))
            notice.add_class("-shown")
            self.app.bell()
            return
        self.dismiss(dtype)

    def action_cancel(self) -> None:
        """Close without switching (the app then cancels a queued switch)."""
        self.dismiss(None)
