"""Closing a screen right after opening it (F2 then Escape at once) must not crash the app."""

from __future__ import annotations

import asyncio

import pytest
from app_helpers import FakeApp, wait_for

from mergechat.ui.screens.conversations import ConversationsScreen as Conversations
from mergechat.ui.screens.settings import SettingsScreen


async def _open_and_close_at_once(fake: FakeApp, open_screen: str, ticks: int) -> None:
    """Open a screen, then close it after ``ticks`` loop turns (before it finished mounting)."""
    async with fake.app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: fake.app.chat.phase == "ready")
        await fake.app.run_action(open_screen)
        for _ in range(ticks):
            await asyncio.sleep(0)
        screen = fake.app.screen
        assert isinstance(screen, SettingsScreen if open_screen == "settings" else Conversations)
        await fake.app.run_action("cancel" if open_screen == "settings" else "close", screen)
        await wait_for(pilot, lambda: fake.app.screen is fake.app.chat)
        await pilot.pause(0.2)
        # Still usable: the same screen opens, shows and closes normally afterwards.
        await pilot.press("f2" if open_screen == "settings" else "f4")
        await wait_for(pilot, lambda: fake.app.screen is not fake.app.chat)
        await pilot.pause(0.1)
        await pilot.press("escape")
        await wait_for(pilot, lambda: fake.app.screen is fake.app.chat)
    assert fake.app.return_code in (None, 0)


# 0 ticks: closed before its widgets exist; 5-20: while its Selects are still mounting.
@pytest.mark.parametrize("ticks", [0, 2, 5, 10, 20])
async def test_settings_closed_right_after_opening(ticks: int) -> None:
    fake = FakeApp()
    await _open_and_close_at_once(fake, "settings", ticks)
    assert fake.engine is not None and len(fake.engine.loads) == 1  # Cancel reloads nothing


@pytest.mark.parametrize("ticks", [0, 2, 5, 10])
async def test_conversations_closed_right_after_opening(ticks: int) -> None:
    fake = FakeApp()
    await _open_and_close_at_once(fake, "conversations", ticks)
