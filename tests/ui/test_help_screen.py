"""The help screen in a host app: every key listed, markup shown as text, three ways to close."""

from __future__ import annotations

from typing import Any

import pytest
from app_helpers import wait_for
from screen_helpers import HostApp
from textual.widgets import DataTable

from mergechat.ui.screens.help import HelpScreen

ROWS = [
    ("enter", "Send"),
    ("ctrl+j, alt+enter", "New line"),
    ("escape", "Stop the reply"),
    ("ctrl+t, f3", "Precision"),
    ("f1", "Help"),
    ("ctrl+q", "Quit"),
    ("ctrl+x", "Literal [bold]brackets[/bold]"),
]


def host() -> HostApp:
    return HostApp(lambda: HelpScreen(ROWS))


async def test_lists_every_key_and_description() -> None:
    app = host()
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        table = app.screen.query_one(DataTable)
        rows = [tuple(str(cell) for cell in table.get_row_at(i)) for i in range(table.row_count)]
    assert rows == ROWS  # "[bold]" stays text: never read as markup


@pytest.mark.parametrize("key", ["escape", "f1", "q"])
async def test_closes_with(key: str) -> None:
    app = host()
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("down", "down")  # scrolling the list does not close it
        assert isinstance(app.screen, HelpScreen)
        await pilot.press(key)
        await wait_for(pilot, lambda: app.results != [])
    assert app.results == [None]


def test_help_screen_snapshot(snap_compare: Any) -> None:
    assert snap_compare(host(), terminal_size=(80, 24))
