"""The precision menu in a host app: order, digits, Enter, Escape, the current marker, blocks."""

from __future__ import annotations

from typing import Any

import pytest
from screen_helpers import UNSUPPORTED_HALF, HostApp, wait_until
from textual.pilot import Pilot
from textual.widgets import OptionList, Static

from mergechat.core.dtypes import DType
from mergechat.ui.screens.precision import PrecisionScreen, is_blocked

VERDICTS: dict[DType, str] = {
    "float32": "ok",
    "bfloat16": "slow 4.2x",
    "float16": UNSUPPORTED_HALF,
}


def host(current: DType | None = "bfloat16", verdicts: dict[DType, str] | None = None) -> HostApp:
    return HostApp(lambda: PrecisionScreen(current, VERDICTS if verdicts is None else verdicts))


def option_texts(app: HostApp) -> list[str]:
    options = app.screen.query_one(OptionList)
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


async def opened(app: HostApp, pilot: Pilot[Any]) -> None:
    await wait_until(pilot, lambda: isinstance(app.screen, PrecisionScreen))


async def test_lists_the_three_precisions_in_order_with_verdicts_and_the_current_one() -> None:
    app = host()
    async with app.run_test() as pilot:
        await opened(app, pilot)
        texts = option_texts(app)
        assert [t.split()[0] for t in texts] == ["1", "2", "3"]
        assert "float32" in texts[0] and "ok" in texts[0]
        assert "bfloat16" in texts[1] and "slow 4.2x" in texts[1]
        assert "float16" in texts[2] and "not implemented for 'Half'" in texts[2]
        assert "●" in texts[1] and "(current)" in texts[1]
        assert "●" not in texts[0] + texts[2]
        # The current precision is highlighted when the menu opens.
        assert app.screen.query_one(OptionList).highlighted == 1


@pytest.mark.parametrize(("key", "dtype"), [("1", "float32"), ("2", "bfloat16")])
async def test_a_digit_chooses_at_once(key: str, dtype: DType) -> None:
    app = host()
    async with app.run_test() as pilot:
        await opened(app, pilot)
        await pilot.press(key)
        await wait_until(pilot, lambda: app.results != [])
    assert app.results == [dtype]


async def test_enter_chooses_the_highlighted_one() -> None:
    app = host()
    async with app.run_test() as pilot:
        await opened(app, pilot)
        await pilot.press("up", "enter")
        await wait_until(pilot, lambda: app.results != [])
    assert app.results == ["float32"]


async def test_escape_chooses_nothing() -> None:
    app = host()
    async with app.run_test() as pilot:
        await opened(app, pilot)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.results != [])
    assert app.results == [None]


async def test_an_unsupported_precision_cannot_be_chosen_and_says_why() -> None:
    app = host()
    async with app.run_test() as pilot:
        await opened(app, pilot)
        await pilot.press("3")
        await pilot.pause()
        assert isinstance(app.screen, PrecisionScreen) and app.results == []
        notice = str(app.screen.query_one("#precision-notice", Static).render())
        assert "float16 cannot be used here" in notice and "Half" in notice
        assert app.screen.query_one(OptionList).highlighted == 2
        await pilot.press("enter")  # Enter on it is refused the same way
        await pilot.pause()
        assert app.results == []
        await pilot.press("1")
        await wait_until(pilot, lambda: app.results != [])
    assert app.results == ["float32"]


async def test_missing_verdicts_and_no_current_precision() -> None:
    app = host(current=None, verdicts={"float32": "does not fit: 9.1 GiB needed, 3.2 GiB free"})
    async with app.run_test() as pilot:
        await opened(app, pilot)
        texts = option_texts(app)
        assert "not measured" in texts[1] and "not measured" in texts[2]
        assert not any("●" in t for t in texts)
        await pilot.press("1")  # does not fit: refused
        await pilot.pause()
        assert app.results == []
        await pilot.press("2")
        await wait_until(pilot, lambda: app.results != [])
    assert app.results == ["bfloat16"]


def test_is_blocked() -> None:
    assert is_blocked(UNSUPPORTED_HALF) and is_blocked("does not fit: 2 GiB needed")
    assert not is_blocked("ok") and not is_blocked("slow 4.2x") and not is_blocked("")


def test_precision_menu_snapshot(snap_compare: Any) -> None:
    assert snap_compare(host(), terminal_size=(80, 24))
