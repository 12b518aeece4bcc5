"""`ConfirmScreen`: a small yes/no modal for a slow or risky choice (keys y/n, Enter, Escape)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    """Ask before doing something slow or risky; dismisses True (go ahead) or False."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > #confirm-dialog {
        width: 72; max-width: 95%; height: auto; padding: 1 2;
        border: thick $warning; background: $surface;
    }
    ConfirmScreen #confirm-title { text-style: bold; color: $text-warning; margin-bottom: 1; }
    ConfirmScreen .confirm-reason { margin-bottom: 1; }
    ConfirmScreen #confirm-buttons { height: auto; align-horizontal: right; }
    ConfirmScreen Button { margin-left: 2; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", show=False),
        Binding("n,escape", "answer(False)", "No", show=False),
    ]

    def __init__(self, title: str, reasons: Sequence[str], *, yes: str = "Use it") -> None:
        super().__init__()
        self._title = title
        self._reasons = list(reasons)
        self._yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Static(Content(self._title), id="confirm-title")
            for reason in self._reasons:
                # Reasons may quote model or error text: never parse them as markup.
                yield Static(Content(f"• {reason}"), classes="confirm-reason")
            with Horizontal(id="confirm-buttons"):
                yield Button(f"{self._yes} (y)", id="confirm-yes", variant="warning")
                yield Button("Go back (n)", id="confirm-no")

    def on_mount(self) -> None:
        # Focus "go back": a stray Enter must not accept a risky choice.
        self.query_one("#confirm-no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, yes: bool) -> None:
        """Dismiss with the answer given by key."""
        self.dismiss(yes)
