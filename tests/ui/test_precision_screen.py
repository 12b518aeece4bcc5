"""The precision menu in a host app: order, digits, Enter, Escape, the current marker, blocks."""

from __future__ import annotations

from typing import Any

import pytest
from app_helpers import wait_for
from screen_helpers import UNSUPPORTED_HALF, HostApp
from textual.pilot import Pilot
from textual.widgets import OptionList, Static

from mergechat.core.dtypes import DType
from mergechat.ui.screens.precision import PrecisionScreen
from mergechat.ui.verdicts import ShownVerdict

VERDICTS: dict[DType, ShownVerdict] = {
    "float32": ShownVerdict("ok", "ok"),
    "bfloat16": ShownVerdict("slow", "slow 4.2x"),
    "float16": ShownVerdict("unsupported", UNSUPPORTED_HALF),
}


def host(
    current: DType | None = "bfloat16", verdicts: dict[DType, ShownVerdict] | None = None
) -> HostApp:
    return HostApp(lambda: PrecisionScreen(current, VERDICTS if verdicts is None else verdicts))


def option_texts(app: HostApp) -> list[str]:
    options = app.screen.query_one(OptionList)
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


async def opened(app: HostApp, pilot: Pilot[Any]) -> None:
    await wait_for(pilot, lambda: isinstance(app.screen, PrecisionScreen))


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


@pytest.mark.parametrize(
    ("keys", "chosen"),
    [
        (["1"], "float32"),  # a digit chooses at once
        (["2"], "bfloat16"),
        (["up", "enter"], "float32"),  # Enter chooses the highlighted one
        (["escape"], None),  # Escape chooses nothing
    ],
    ids=["digit-1", "digit-2", "enter", "escape"],
)
async def test_a_digit_enter_or_escape_chooses(keys: list[str], chosen: DType | None) -> None:
    app = host()
    async with app.run_test() as pilot:
        await opened(app, pilot)
        await pilot.press(*keys)
        await wait_for(pilot, lambda: app.results != [])
    assert app.results == [chosen]


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
        await wait_for(pilot, lambda: app.results != [])
    assert app.results == ["float32"]


async def test_missing_verdicts_and_no_current_precision() -> None:
    app = host(
        current=None,
        verdicts={
            "float32": ShownVerdict("does not fit", "does not fit: 9.1 GiB needed, 3.2 GiB free")
        },
    )
    async with app.run_test() as pilot:
        await opened(app, pilot)
        texts = option_texts(app)
        assert "not measured" in texts[1] and "not measured" in texts[2]
        assert not any("●" in t for t in texts)
        await pilot.press("1")  # does not fit: refused
        await pilot.pause()
        assert app.results == []
        await pilot.press("2")
        await wait_for(pilot, lambda: app.results != [])
    assert app.results == ["bfloat16"]


def test_blocking_is_read_from_the_verdict_kind_not_its_text() -> None:
    assert ShownVerdict("unsupported", "whatever the wording").blocked
    assert ShownVerdict("does not fit", "2 GiB needed").blocked
    assert not ShownVerdict("ok", "unsupported-looking text").blocked
    assert not ShownVerdict("slow", "slow 4.2x").blocked
    assert not ShownVerdict(None, "not measured yet").blocked


def test_precision_menu_snapshot(snap_compare: Any) -> None:
    assert snap_compare(host(), terminal_size=(80, 24))
