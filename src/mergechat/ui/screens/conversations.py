"""The conversations screen: saved chats newest first; open, rename or delete them by keyboard."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Label

from mergechat.core.store.store import ConversationSummary, HistoryStore, HistoryUnavailable
from mergechat.core.visible import escape_control
from mergechat.ui.screens.confirm import ConfirmScreen

_COLUMNS = ("Title", "Model", "Updated", "Msgs")


@dataclass(frozen=True)
class OpenConversation:
    """The screen's result when the user chose a conversation to open."""

    id: int


def confirm_delete(summary: ConversationSummary) -> ConfirmScreen:
    """The yes/no question before deleting ``summary``'s conversation (y deletes, n keeps)."""
    return ConfirmScreen(
        f"Delete “{escape_control(summary.title)}”?",
        [f"Its {summary.message_count} messages are removed from the history for good."],
        yes="Delete",
    )


class ConversationsScreen(Screen[OpenConversation | None]):
    """Saved conversations, newest first. Dismisses with `OpenConversation` or None (Escape)."""

    DEFAULT_CSS = """
    ConversationsScreen { layout: vertical; }
    ConversationsScreen #conversations-title { padding: 0 1; text-style: bold; }
    ConversationsScreen #conversations-empty { padding: 1 2; color: $text-muted; }
    ConversationsScreen DataTable { height: 1fr; }
    ConversationsScreen #conversations-rename { dock: bottom; margin-bottom: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", id="conversations_open"),
        Binding("r", "rename", "Rename", id="conversations_rename"),
        Binding("d,delete", "delete", "Delete", id="conversations_delete"),
        Binding("escape", "close", "Back", id="conversations_close"),
    ]

    class Deleted(Message):
        """Posted after a conversation was deleted (the app may be showing it)."""

        def __init__(self, conversation_id: int) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    def __init__(self, store: HistoryStore, current_id: int | None = None) -> None:
        """List ``store``'s conversations; ``current_id`` (the open chat) is marked and selected."""
        super().__init__()
        self.store = store
        self.current_id = current_id
        self.summaries: list[ConversationSummary] = []
        self._renaming: int | None = None

    def compose(self) -> ComposeResult:
        yield Label("Conversations", id="conversations-title")
        yield Label("No saved conversations yet.", id="conversations-empty")
        table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns(*_COLUMNS)
        yield table
        yield Input(id="conversations-rename", placeholder="New title (empty: first message)")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#conversations-rename", Input).display = False
        self.refresh_list(select=self.current_id)

    @property
    def table(self) -> DataTable[str]:
        """The list widget."""
        return self.query_one(DataTable)

    def refresh_list(self, select: int | None = None) -> None:
        """Reload the list from the store, keeping the cursor on ``select`` when it is listed."""
        try:
            self.summaries = self.store.list_conversations()
        except HistoryUnavailable as exc:
            self.summaries = []
            self.notify(str(exc), title="History unavailable", severity="error", markup=False)
        table = self.table
        table.clear()
        for summary in self.summaries:
            marker = "● " if summary.id == self.current_id else ""
            table.add_row(
                escape_control(marker + summary.title),  # stored text: shown, never run
                escape_control(Path(summary.model_path).name or "-"),
                datetime.fromtimestamp(summary.updated).strftime("%Y-%m-%d %H:%M"),
                str(summary.message_count),
                key=str(summary.id),
            )
        self.query_one("#conversations-empty").display = not self.summaries
        ids = [s.id for s in self.summaries]
        if select in ids:
            table.move_cursor(row=ids.index(select))
        table.focus()

    def selected(self) -> ConversationSummary | None:
        """The conversation under the cursor."""
        if not self.summaries:
            return None
        return self.summaries[min(self.table.cursor_row, len(self.summaries) - 1)]

    # -- actions --------------------------------------------------------------------------------
    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        """Close and open the selected conversation in the chat."""
        summary = self.selected()
        if summary is not None and self._renaming is None:
            self.dismiss(OpenConversation(summary.id))

    def action_rename(self) -> None:
        """Edit the selected conversation's title in the input below the list."""
        summary = self.selected()
        if summary is None:
            return
        self._renaming = summary.id
        rename = self.query_one("#conversations-rename", Input)
        rename.value = summary.title if summary.renamed else ""
        rename.display = True
        rename.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        conv_id, self._renaming = self._renaming, None
        event.input.display = False
        if conv_id is None:
            return
        try:
            self.store.rename(conv_id, event.value)
        except HistoryUnavailable as exc:
            self.notify(str(exc), title="Rename failed", severity="error", markup=False)
        self.refresh_list(select=conv_id)

    def action_delete(self) -> None:
        """Ask for confirmation, then delete the selected conversation."""
        summary = self.selected()
        if summary is None or self._renaming is not None:
            return

        def confirmed(delete: bool | None) -> None:
            if not delete:
                return
            try:
                self.store.delete(summary.id)
            except HistoryUnavailable as exc:
                self.notify(str(exc), title="Delete failed", severity="error", markup=False)
                return
            self.post_message(self.Deleted(summary.id))
            self.notify(f"Deleted “{summary.title}”.", markup=False)
            index = self.table.cursor_row
            neighbours = [s.id for s in self.summaries if s.id != summary.id]
            self.refresh_list(
                select=neighbours[min(index, len(neighbours) - 1)] if neighbours else None
            )

        self.app.push_screen(confirm_delete(summary), confirmed)

    def action_close(self) -> None:
        """Cancel a rename in progress, or close the screen."""
        if self._renaming is not None:
            self._renaming = None
            self.query_one("#conversations-rename", Input).display = False
            self.table.focus()
            return
        self.dismiss(None)
