"""`HelpScreen` (F1): every key and what it does, and every settings problem found at start-up
(notices show only the first few); Escape, F1 or q closes it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static


class HelpScreen(ModalScreen[None]):
    """Lists (keys, description) pairs in a scrollable table."""

    CSS_PATH = "../styles/help.tcss"
    AUTO_FOCUS = "#help-keys"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "close", "Close", id="help.close"),
    ]

    def __init__(self, bindings: Sequence[tuple[str, str]], problems: Sequence[str] = ()) -> None:
        super().__init__()
        self._rows = list(bindings)
        self._problems = list(problems)

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog"):
            if self._problems:
                title = f"Settings problems ({len(self._problems)})"
                yield Static(title, id="help-problems-title")
                with VerticalScroll(id="help-problems"):
                    for line in self._problems:
                        # Rich Text, not str: a path with "[...]" must not be read as markup.
                        yield Static(Text(f"• {line}"), classes="help-problem")
            yield Static("Keys", id="help-title")
            table: DataTable[Text] = DataTable(
                id="help-keys", cursor_type="row", zebra_stripes=True, show_cursor=True
            )
            yield table
            yield Static(
                Content.styled("↑↓ PgUp PgDn: scroll · Esc, F1 or q: close", "$text-muted"),
                id="help-hint",
            )

    def on_mount(self) -> None:
        table = self.query_one("#help-keys", DataTable)
        table.add_column("Key", key="key")
        table.add_column("Action", key="action")
        for keys, description in self._rows:
            # Rich Text, not str: a DataTable would read "[...]" in a str as markup.
            table.add_row(Text(keys, style="bold"), Text(description))

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)
