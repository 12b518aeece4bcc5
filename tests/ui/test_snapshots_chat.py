"""Snapshots of the chat screen (update with ``pytest --snapshot-update`` after checking them)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from app_helpers import FakeApp, wait_for
from textual.pilot import Pilot

from fixtures.fake_engine import Script

SIZE = (100, 30)
REPLY = [
    "Merging",
    " works",
    " like",
    " this:",
    "\n\n",
    "- **ties**",
    " keeps",
    " signs",
    "\n",
    "- `slerp`",
    " blends",
    " two",
    " models",
    "\n\n",
    "```python\n",
    "print(1 + 1)\n",
    "```",
]


async def _settle(fake: FakeApp, pilot: Pilot[Any]) -> None:
    fake.app.clear_notifications()
    fake.app.chat.prompt.cursor_blink = False
    await pilot.pause(0.1)


def _finished_exchange(fake: FakeApp) -> Callable[[Pilot[Any]], Any]:
    async def run(pilot: Pilot[Any]) -> None:
        chat = fake.app.chat
        await wait_for(pilot, lambda: chat.phase == "ready")
        await pilot.press(*"How do merges work?")
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: (
                chat.phase == "ready"
                and len(chat.conversation.messages) == 2
                and "tokens" in chat.view.children[-1].query_one(".reply-footer").render().plain
            ),  # type: ignore[attr-defined]
        )
        await _settle(fake, pilot)

    return run


def test_chat_with_a_finished_exchange(snap_compare: Any) -> None:
    fake = FakeApp(Script(reply=REPLY))
    assert snap_compare(fake.app, terminal_size=SIZE, run_before=_finished_exchange(fake))


def test_chat_while_loading(snap_compare: Any) -> None:
    gate = threading.Event()
    fake = FakeApp(Script(load_gate=gate))

    async def run(pilot: Pilot[Any]) -> None:
        chat = fake.app.chat
        await wait_for(pilot, lambda: chat.load_progress.active and chat.status.info.progress > 0)
        await pilot.press(*"typed while loading")
        await _settle(fake, pilot)

    try:
        assert snap_compare(fake.app, terminal_size=SIZE, run_before=run)
    finally:
        gate.set()


def test_empty_chat_at_80x24(snap_compare: Any) -> None:
    """A first start on a small terminal: the hint says what to do, the footer's keys fit."""
    fake = FakeApp()

    async def run(pilot: Pilot[Any]) -> None:
        await wait_for(pilot, lambda: fake.app.chat.phase == "ready")
        await _settle(fake, pilot)

    assert snap_compare(fake.app, terminal_size=(80, 24), run_before=run)
