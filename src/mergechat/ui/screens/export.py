"""`ExportScreen`: asks where to export the conversation; the file's suffix picks the format."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from mergechat.core.store.export import ExportFormat


def format_for(path: Path) -> ExportFormat:
    """``json`` for a ``.json`` file, otherwise Markdown."""
    return "json" if path.suffix.lower() == ".json" else "md"


class ExportScreen(ModalScreen[Path | None]):
    """A path input prefilled with the default file; Enter exports there, Escape cancels."""

    DEFAULT_CSS = """
    ExportScreen { align: center middle; }
    ExportScreen > Vertical {
        width: 90; max-width: 95%; height: auto; padding: 1 2;
        border: round $accent; background: $surface;
    }
    ExportScreen .hint { color: $text-muted; margin-top: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="export_cancel"),
    ]

    def __init__(self, default: Path) -> None:
        """Offer ``default`` (a file path) to edit."""
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Export the conversation to:", markup=False)
            yield Input(str(self.default), id="export-path", select_on_focus=False)
            yield Label(
                "A name ending in .json writes JSON (everything stored); any other, Markdown.\n"
                "Enter: export   Esc: cancel",
                classes="hint",
                markup=False,
            )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text:
            self.notify("Give a file name.", severity="warning")
            return
        self.dismiss(Path(text).expanduser())

    def action_cancel(self) -> None:
        """Close without exporting."""
        self.dismiss(None)
