"""The conversations screen in a small host app: list, open, rename, delete with confirmation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import DataTable, Input

from mergechat.core.store.store import HistoryStore
from mergechat.ui.screens.confirm import ConfirmScreen
from mergechat.ui.screens.conversations import ConversationsScreen, OpenConversation


class Host(App[None]):
    """Shows the screen at start-up and records what it returns and posts."""

    def __init__(self, store: HistoryStore, current_id: int | None = None) -> None:
        super().__init__()
        self.store = store
        self.current_id = current_id
        self.results: list[OpenConversation | None] = []
        self.deleted: list[int] = []

    def on_mount(self) -> None:
        self.push_screen(ConversationsScreen(self.store, self.current_id), self.results.append)

    def on_conversations_screen_deleted(self, message: ConversationsScreen.Deleted) -> None:
        self.deleted.append(message.conversation_id)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    s = HistoryStore.open(tmp_path / "h.sqlite3")
    for model, first in (("/m/alpha", "oldest question"), ("/m/beta", "middle"), ("/m/g", "new")):
        conv = s.new_conversation(model)
        s.add_message(conv, "user", first)
        s.add_message(conv, "assistant", "answer")
    yield s
    s.close()


def _rows(app: App[None]) -> list[list[str]]:
    table = app.screen.query_one(DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def test_lists_newest_first_and_marks_the_open_one(store: HistoryStore) -> None:
    app = Host(store, current_id=2)
    async with app.run_test() as pilot:
        await pilot.pause()
        rows = _rows(app)
        assert [r[0] for r in rows] == ["new", "● middle", "oldest question"]
        assert [r[1] for r in rows] == ["g", "beta", "alpha"]
        assert [r[3] for r in rows] == ["2", "2", "2"]
        assert app.screen.query_one(DataTable).cursor_row == 1  # the open conversation
        assert not app.screen.query_one("#conversations-empty").display


async def test_enter_opens_the_chosen_conversation(store: HistoryStore) -> None:
    app = Host(store)
    async with app.run_test() as pilot:
        await pilot.press("down", "down", "enter")
        await pilot.pause()
        assert app.results == [OpenConversation(1)]
        assert not isinstance(app.screen, ConversationsScreen)


async def test_escape_closes_without_a_choice(store: HistoryStore) -> None:
    app = Host(store)
    async with app.run_test() as pilot:
        await pilot.press("escape")
        await pilot.pause()
        assert app.results == [None]


async def test_rename_inline_and_cancel(store: HistoryStore) -> None:
    app = Host(store)
    async with app.run_test() as pilot:
        await pilot.press("r")
        rename = app.screen.query_one(Input)
        assert rename.display and rename.has_focus and rename.value == ""
        await pilot.press(*"my chat", "enter")
        await pilot.pause()
        assert store.get_conversation(3).title == "my chat"
        assert _rows(app)[0][0] == "my chat"
        assert not rename.display and app.screen.query_one(DataTable).has_focus
        # The renamed title is offered for editing; Escape cancels without closing the screen.
        await pilot.press("r")
        assert rename.value == "my chat"
        await pilot.press("x", "escape")
        await pilot.pause()
        assert store.get_conversation(3).title == "my chat"
        assert isinstance(app.screen, ConversationsScreen) and app.results == []


async def test_delete_asks_first(store: HistoryStore) -> None:
    app = Host(store)
    async with app.run_test() as pilot:
        await pilot.press("down", "d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, ConversationsScreen)
        assert len(store.list_conversations()) == 3 and app.deleted == []
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert [s.id for s in store.list_conversations()] == [3, 1]
        assert app.deleted == [2]
        assert [r[0] for r in _rows(app)] == ["new", "oldest question"]
        assert app.screen.query_one(DataTable).cursor_row == 1  # the next one down


async def test_empty_store_says_so(tmp_path: Path) -> None:
    with HistoryStore.open(tmp_path / "empty.sqlite3") as empty:
        app = Host(empty)
        async with app.run_test() as pilot:
            await pilot.pause()
            assert app.screen.query_one("#conversations-empty").display
            await pilot.press("enter", "d", "r")
            await pilot.pause()
            assert isinstance(app.screen, ConversationsScreen) and app.results == []
