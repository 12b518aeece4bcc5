"""`CompareColumn`: one model's column: its name, a status line, its agreement results, notes,
and its reply streamed as Markdown (the chat's `ReplyBody`) or the error that stopped it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Static

from mergechat.core.compare.events import ModelResult, Phase
from mergechat.core.compare.plan import CompareModel
from mergechat.core.dtypes import DType
from mergechat.core.visible import escape_control
from mergechat.ui.compare.keys import COLUMN_BINDINGS
from mergechat.ui.compare.results import result_lines
from mergechat.ui.widgets.reply_body import ReplyBody

#: Phases whose detail is shown elsewhere (the error) or says nothing new.
_NO_DETAIL = ("failed", "done", "loaded", "stopped")
_PHASE_STYLE = {
    "failed": "bold $text-error",
    "stopped": "bold $text-warning",
    "done": "bold $text-success",
}


@dataclass(frozen=True)
class ColumnInfo:
    """What a column's status line shows; compare events replace some fields."""

    phase: Phase = "waiting"
    #: The phase's detail (a load stage, why it waits, a switch's method).
    detail: str = ""
    #: 0..1 while loading.
    fraction: float | None = None
    device: str = ""
    #: The precision read from the loaded model (`ModelState.dtype`), never the plan's.
    dtype: DType | None = None
    tokens_per_s: float | None = None

    def status(self) -> Content:
        """``cpu bfloat16 │ answering │ 25.0 tok/s``: the parts known so far (narrow columns
        need it short)."""
        phase: str = self.phase
        if self.phase == "loading" and self.fraction is not None:
            phase = f"loading {self.fraction * 100:.0f}%"
        model = Content(f"{self.device} ") if self.device else Content("")
        model += Content.styled(self.dtype, "bold") if self.dtype else Content("")
        parts = [model] if model else []
        parts.append(Content.styled(phase, _PHASE_STYLE.get(self.phase, "reverse")))
        if self.tokens_per_s is not None:
            parts.append(Content(f"{self.tokens_per_s:.1f} tok/s"))
        if self.detail and self.detail != self.phase and self.phase not in _NO_DETAIL:
            parts.append(Content.styled(escape_control(self.detail), "$text-muted"))
        return Content(" │ ").join(parts)


class ReplyScroll(VerticalScroll):
    """A column's reply; focusable, so the focus can move from column to column."""

    BINDINGS: ClassVar[list[BindingType]] = list(COLUMN_BINDINGS)

    class Move(Message):
        """Move the focus ``step`` columns (-1: left, 1: right)."""

        def __init__(self, step: int) -> None:
            super().__init__()
            self.step = step

    def action_previous_column(self) -> None:
        """Focus the column on the left."""
        self.post_message(self.Move(-1))

    def action_next_column(self) -> None:
        """Focus the column on the right."""
        self.post_message(self.Move(1))


class CompareColumn(Vertical):
    """One model: `set_info` for its status, `append` while it streams, `finish` at the end."""

    def __init__(self, index: int, model: CompareModel) -> None:
        super().__init__(id=f"column-{index}", classes="compare-column")
        self.index = index
        self.model = model
        self.info = ColumnInfo(phase="failed" if model.error else "waiting")
        self.notes: list[str] = list(model.notes)
        self.error = model.error or ""

    def compose(self) -> ComposeResult:
        yield Static(Content.styled(escape_control(self.model.label), "bold"), classes="title")
        yield Static(self.info.status(), classes="status")
        yield Static("", classes="result")
        yield Static("", classes="notes")
        with ReplyScroll(classes="reply"):
            yield ReplyBody(classes="reply-body")
            yield Static("", classes="error")

    def on_mount(self) -> None:
        self._show_notes()
        self._show_error()

    @property
    def body(self) -> ReplyBody:
        """The reply's Markdown."""
        return self.query_one(ReplyBody)

    @property
    def reply_text(self) -> str:
        """The reply shown so far."""
        return self.body.source

    @property
    def status_text(self) -> str:
        """The status line as plain text."""
        return self.info.status().plain

    @property
    def result_text(self) -> str:
        """The agreement results as plain text."""
        return str(self.query_one(".result", Static).content)

    @property
    def notes_text(self) -> str:
        """The notes as plain text."""
        return str(self.query_one(".notes", Static).content)

    @property
    def error_text(self) -> str:
        """The error as plain text ("" when none)."""
        return str(self.query_one(".error", Static).content)

    def set_info(self, **changes: Any) -> None:
        """Replace some status fields and repaint the status line."""
        self.info = replace(self.info, **changes)
        self.query_one(".status", Static).update(self.info.status())
        if self.info.phase == "failed" and self.info.detail:
            self.show_error(self.info.detail)

    def new_prompt(self) -> None:
        """Clear the reply, results and error for the next answer (a failed model keeps its
        error: it stays out of the comparison)."""
        if self.info.phase == "failed" and self.error and not self.info.dtype:
            return
        self.body.set_text("")
        self.query_one(".result", Static).update("")
        self.show_error("")
        self.set_info(phase="waiting", detail="", fraction=None, tokens_per_s=None)

    def append(self, delta: str) -> None:
        """More reply text; a reply read at its end follows the text as it grows."""
        scroll = self.query_one(ReplyScroll)
        following = scroll.scroll_y >= scroll.max_scroll_y
        self.body.append(delta)
        if following:
            scroll.call_after_refresh(scroll.scroll_end, animate=False)

    def add_note(self, note: str) -> None:
        """A load warning or engine notice, kept under the status line."""
        if note not in self.notes:
            self.notes.append(note)
            self._show_notes()

    def show_error(self, error: str) -> None:
        """Show why this model failed ("" clears it)."""
        self.error = error
        self._show_error()

    def finish(self, result: ModelResult, *, reference: str, role: str) -> None:
        """The model's result: the whole reply rendered once, its speed and agreement."""
        self.body.set_text(result.reply)
        stats, state = result.stats, result.state
        changes: dict[str, Any] = {"tokens_per_s": stats.decode_tokens_per_s if stats else None}
        if state is not None:
            changes.update(device=state.device, dtype=state.dtype)
        elif stats is not None and stats.dtype:
            changes.update(device=stats.device, dtype=stats.dtype)
        if result.error:
            changes.update(phase="failed", detail=result.error)
        elif result.finish in ("stopped", None):
            changes.update(phase="stopped", detail="")
        else:
            changes.update(phase="done", detail="")
        self.set_info(**changes)
        lines = result_lines(result, reference=reference, role=role)
        text = escape_control("\n".join(lines), keep_lines=True)
        self.query_one(".result", Static).update(Content(text))
        for note in result.notes:
            self.add_note(note)

    def _show_notes(self) -> None:
        text = "\n".join(f"• {n}" for n in self.notes)
        self.query_one(".notes", Static).update(Content(escape_control(text, keep_lines=True)))
        self.query_one(".notes", Static).display = bool(self.notes)

    def _show_error(self) -> None:
        error = self.query_one(".error", Static)
        text = escape_control(self.error, keep_lines=True)
        error.update(Content.styled(f"failed: {text}", "$text-error") if text else "")
        error.display = bool(text)
