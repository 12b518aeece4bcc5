"""The compare view's layout by keyboard: focus between columns, widen, alone, tabs when narrow,
the help; and one snapshot of a finished comparison."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from compare_helpers import answered, compare_app, prepared, send
from textual.pilot import Pilot
from textual.widgets import Tabs

from mergechat.ui.bindings import unknown_keymap_ids
from mergechat.ui.compare.column_view import ReplyScroll
from mergechat.ui.compare.palette import compare_commands
from mergechat.ui.screens.help import HelpScreen


async def test_tab_and_left_right_move_the_focus_between_columns() -> None:
    app, _ = compare_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await prepared(app, pilot)
        assert app.focused is app.prompt and app.board.current == 0
        await pilot.press("tab")  # past the prompt (last): the first column
        assert app.focused is app.board.column(0).query_one(ReplyScroll)
        await pilot.press("right", "right")
        assert app.board.current == 2 and app.focused is app.board.column(2).query_one(ReplyScroll)
        await pilot.press("right")  # wraps around
        assert app.board.current == 0
        await pilot.press("left")
        assert app.board.current == 2
        assert app.board.column(2).has_class("-current")
        assert not app.board.column(0).has_class("-current")


async def test_f5_widens_the_focused_column_and_f6_shows_it_alone() -> None:
    app, _ = compare_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await prepared(app, pilot)
        await pilot.press("tab", "right")
        widths = [c.size.width for c in app.board.columns]
        assert widths[0] == widths[1]
        await pilot.press("f5")
        await pilot.pause()
        wide = [c.size.width for c in app.board.columns]
        assert wide[1] > 1.5 * wide[0] and app.board.column(1).has_class("-wide")
        await pilot.press("f6")
        await pilot.pause()
        assert app.board.shown == [1]
        await pilot.press("f6", "f5")
        await pilot.pause()
        assert app.board.shown == [0, 1, 2]
        assert len({c.size.width for c in app.board.columns}) == 1


async def test_columns_become_tabs_below_100_terminal_columns_and_back() -> None:
    app, _ = compare_app()
    async with app.run_test(size=(90, 30)) as pilot:
        await prepared(app, pilot)
        tabs = app.query_one(Tabs)
        assert tabs.display and app.board.shown == [0]
        await pilot.press("tab", "tab", "right")  # the tabs bar, the column; the next column
        assert app.board.shown == [1] and tabs.active == "tab-1"
        await pilot.resize_terminal(140, 30)
        await pilot.pause()
        assert not tabs.display and app.board.shown == [0, 1, 2]
        await pilot.resize_terminal(90, 30)
        await pilot.pause()
        assert tabs.display and app.board.shown == [1]


async def test_f1_lists_the_compare_keys() -> None:
    app, _ = compare_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        rows = dict(app.screen._rows)
        assert rows["escape"] == "Stop all" and rows["ctrl+r"] == "Regenerate all"
        assert rows["ctrl+t, f3"] == "Precision of the focused column"
        assert rows["f5"].startswith("Widen the focused column") and "alone" in rows["f6"]
        assert "float32" in rows["f7"] and "Same precision" in rows["f8"]
        assert "each column" in rows["tab, shift+tab"] and "left" in rows


def test_a_finished_comparison_at_120x30(snap_compare: Any) -> None:
    app, _ = compare_app()

    async def run(pilot: Pilot[Any]) -> None:
        await prepared(app, pilot)
        await send(pilot, "hi")
        await answered(app, pilot)
        app.wall_s = None  # the time it took varies from run to run
        app.show_info()
        app.clear_notifications()
        app.prompt.cursor_blink = False
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=(120, 30), run_before=run)


def _write_config(text: str) -> None:
    path = Path(os.environ["MERGECHAT_CONFIG_DIR"]) / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


async def test_the_keymap_rebinds_compare_keys_by_id_and_history_can_be_off() -> None:
    _write_config('[keymap]\n"compare.widen" = "f9"\n[history]\nenabled = false\n')
    assert "compare.widen" not in unknown_keymap_ids({"compare.widen": "f9"})
    app, _ = compare_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await prepared(app, pilot)
        await pilot.press("f5")  # no longer bound
        await pilot.pause()
        assert not app.board.wide
        await pilot.press("f9")
        await pilot.pause()
        assert app.board.wide
        await send(pilot, "hi")
        await answered(app, pilot)
        assert app.saved == []  # [history] enabled = false
    commands = [c.name for c in compare_commands(app)]
    assert "All columns to float32" in commands and "Same precision for all on/off" in commands
