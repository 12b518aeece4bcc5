"""Issue 12 item 4: a precision switch asked for while a reply streams waits for the reply.

It is queued (the status bar and the precision menu say so), a second choice replaces it, Escape
in the menu cancels it, and it runs exactly once when the reply ends: finished, stopped or failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from threading import Event
from typing import Any

import pytest
from app_helpers import MODEL_PATH, SIZE, FakeApp, notices, open_screen, ready_app, wait_for
from textual.command import CommandPalette
from textual.pilot import Pilot
from textual.widgets import OptionList, Static

from fixtures.fake_engine import Script
from mergechat.core.api import LoadRequest, ModelLoaded
from mergechat.ui.conversation import Conversation
from mergechat.ui.screens.precision import PrecisionScreen
from mergechat.ui.widgets.assistant_message import AssistantMessage
from mergechat.ui.widgets.status_bar import StatusBar

QUEUED_FLOAT16 = "switch to float16 after this reply"


def status_line(fake: FakeApp) -> str:
    return str(StatusBar.render_content(fake.app.chat.status.info))


def loaded(fake: FakeApp) -> int:
    assert fake.engine is not None
    return sum(isinstance(event, ModelLoaded) for event in fake.engine.events)


def switches(fake: FakeApp) -> list[str]:
    assert fake.engine is not None
    return list(fake.engine.switches)


async def streaming(fake: FakeApp, pilot: Pilot[object]) -> None:
    """Load, send a prompt and wait until its reply is in flight (with its widget shown)."""
    chat = fake.app.chat
    await wait_for(pilot, lambda: chat.phase == "ready" and fake.app.capabilities is not None)
    await pilot.press("h", "i", "enter")
    await wait_for(pilot, lambda: chat.conversation.busy and bool(chat.query(AssistantMessage)))
    assert chat.phase == "generating"


@asynccontextmanager
async def streaming_app(**script: Any) -> AsyncIterator[tuple[FakeApp, Pilot[object], Event]]:
    """A `FakeApp` (``script`` as `Script` fields) whose first reply is in flight, its tokens
    held until the test sets the gate (set on the way out, so the engine thread ends)."""
    gate = Event()
    fake = FakeApp(Script(reply_gate=gate, **script))
    async with fake.app.run_test(size=SIZE) as pilot:
        await streaming(fake, pilot)
        try:
            yield fake, pilot, gate
        finally:
            gate.set()


async def open_menu(fake: FakeApp, pilot: Pilot[object]) -> PrecisionScreen:
    return await open_screen(fake, pilot, "ctrl+t", PrecisionScreen)


async def choose_in_menu(fake: FakeApp, pilot: Pilot[object], key: str) -> None:
    await open_menu(fake, pilot)
    await pilot.press(key)
    await wait_for(pilot, lambda: fake.app.screen is fake.app.chat)


def text_of(screen: PrecisionScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def settled(fake: FakeApp, pilot: Pilot[object]) -> None:
    """Until no reply is in flight, nothing is queued and the chat is ready."""
    chat = fake.app.chat
    await wait_for(
        pilot,
        lambda: (
            not chat.conversation.busy
            and fake.app.switcher.queued is None
            and chat.phase == "ready"
        ),
    )
    await pilot.pause()


async def test_a_switch_chosen_during_a_reply_waits_for_it_and_runs_once() -> None:
    async with streaming_app() as (fake, pilot, gate):
        chat = fake.app.chat
        # The menu opens while the reply streams and says a choice waits for it.
        screen = await open_menu(fake, pilot)
        assert "a choice waits for this reply" in text_of(screen, "#precision-title")
        assert "Enter: switch after this reply" in text_of(screen, "#precision-help")
        await pilot.press("3")
        await wait_for(pilot, lambda: fake.app.screen is chat)
        # Queued, not refused: the reply goes on and the engine has not been asked yet.
        assert fake.app.switcher.queued == "float16" and switches(fake) == []
        assert chat.phase == "generating"
        assert QUEUED_FLOAT16 in status_line(fake)
        assert "Switching to float16 after this reply." in notices(fake.app)
        assert not any("Cannot switch" in n for n in notices(fake.app))
        gate.set()
        await wait_for(pilot, lambda: chat.status.info.dtype == "float16")
        await settled(fake, pilot)
        assert switches(fake) == ["float16"]
        assert chat.status.info.queued_dtype == "" and "after this reply" not in status_line(fake)
        # The next reply ends without a second switch.
        await pilot.press("a", "g", "a", "i", "n", "enter")
        await wait_for(pilot, lambda: len(chat.conversation.messages) == 4)
        await settled(fake, pilot)
        assert switches(fake) == ["float16"]


async def test_escape_in_the_menu_cancels_the_queued_switch() -> None:
    async with streaming_app() as (fake, pilot, gate):
        await choose_in_menu(fake, pilot, "1")
        assert fake.app.switcher.queued == "float32"
        # The menu opened again shows the queued switch, highlighted, and says Escape cancels it.
        screen = await open_menu(fake, pilot)
        options = screen.query_one(OptionList)
        first = str(options.get_option_at_index(0).prompt)
        assert "float32" in first and "(after this reply)" in first
        assert options.highlighted == 0
        assert "switching to float32 after this reply" in text_of(screen, "#precision-title")
        assert "Esc: cancel the switch" in text_of(screen, "#precision-help")
        await pilot.press("escape")
        await wait_for(pilot, lambda: fake.app.screen is fake.app.chat)
        assert fake.app.switcher.queued is None
        assert any(
            "switch to float32 after this reply is cancelled: the weights stay bfloat16" in n
            for n in notices(fake.app)
        )
        assert "after this reply" not in status_line(fake)
        gate.set()
        await settled(fake, pilot)
        assert switches(fake) == [] and fake.app.chat.status.info.dtype == "bfloat16"


async def test_a_second_choice_from_the_palette_replaces_the_queued_one() -> None:
    async with streaming_app() as (fake, pilot, gate):
        await choose_in_menu(fake, pilot, "1")
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(fake.app.screen, CommandPalette))
        await pilot.press(*"Precision: float16")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: fake.app.switcher.queued == "float16")
        assert "Switching to float16 after this reply (instead of float32)." in notices(fake.app)
        assert QUEUED_FLOAT16 in status_line(fake)
        # Choosing the precision the weights have now cancels the queued switch.
        fake.app.switch_precision("bfloat16")
        assert fake.app.switcher.queued is None
        fake.app.switch_precision("float16")
        gate.set()
        await wait_for(pilot, lambda: fake.app.chat.status.info.dtype == "float16")
        await settled(fake, pilot)
        assert switches(fake) == ["float16"]


@pytest.mark.parametrize("key", ["escape", "ctrl+n"])
async def test_the_queued_switch_runs_after_a_reply_stopped_or_left_for_a_new_chat(
    key: str,
) -> None:
    fake = FakeApp(Script(reply=["word "] * 400, token_delay=0.01))
    async with fake.app.run_test(size=SIZE) as pilot:
        await streaming(fake, pilot)
        fake.app.switch_precision("float32")
        await pilot.press(key)
        await wait_for(pilot, lambda: fake.app.chat.status.info.dtype == "float32")
        await settled(fake, pilot)
        assert switches(fake) == ["float32"]
        if key == "escape":  # the stopped reply stays (a new chat clears the screen)
            reply = fake.app.chat.query_one(AssistantMessage)
            assert "stopped" in reply.footer_text


async def test_the_queued_switch_runs_after_a_failed_reply() -> None:
    async with streaming_app(reply_error="CUDA out of memory") as (fake, pilot, gate):
        fake.app.switch_precision("float32")
        gate.set()
        await wait_for(pilot, lambda: fake.app.chat.status.info.dtype == "float32")
        await settled(fake, pilot)
        assert switches(fake) == ["float32"]
        assert any("out of memory" in n for n in notices(fake.app))


async def test_a_failure_that_left_no_model_drops_the_queued_switch_with_a_notice() -> None:
    async with streaming_app(reply_error="CUDA error: device lost") as (fake, pilot, gate):
        fake.app.switch_precision("float32")
        fake.app.model_state = None  # what a failure that released the model leaves behind
        gate.set()
        await wait_for(pilot, lambda: fake.app.switcher.queued is None)
        await pilot.pause()
        assert switches(fake) == []
        assert any("switch to float32 is dropped" in n for n in notices(fake.app))


async def test_loading_a_model_drops_the_queued_switch() -> None:
    async with streaming_app() as (fake, pilot, gate):
        fake.app.switch_precision("float32")
        fake.app._load(LoadRequest(MODEL_PATH, device="cpu"))
        assert fake.app.switcher.queued is None
        await wait_for(
            pilot,
            lambda: any(
                "switch to float32 is dropped: a model is loading" in n for n in notices(fake.app)
            ),
        )
        gate.set()
        await wait_for(pilot, lambda: loaded(fake) == 2)
        await settled(fake, pilot)
        assert switches(fake) == []


def test_the_conversation_says_when_its_reply_ends() -> None:
    ended: list[str] = []
    conversation = Conversation()
    conversation.on_reply_end = lambda: ended.append("end")
    conversation.clear()  # nothing in flight: no end
    conversation.begin(1, "new")
    conversation.finish("hi", "complete")
    conversation.begin(2, "new")
    conversation.fail()
    conversation.begin(3, "new")
    conversation.clear()  # a new chat drops the reply in flight
    conversation.fail()  # a stale event after that ends nothing
    assert ended == ["end", "end", "end"]


async def test_a_switch_asked_for_right_after_enter_runs_once_after_a_quick_reply() -> None:
    # The reply may end while its widgets are still mounting (its events wait in the chat).
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        chat = fake.app.chat
        chat.prompt.load_text("hi")
        chat.action_send()  # what Enter does; the switch is asked for before the reply mounts
        fake.app.switch_precision("float32")
        assert fake.app.switcher.queued == "float32" and not chat.conversation.busy
        await wait_for(pilot, lambda: fake.app.chat.status.info.dtype == "float32")
        await settled(fake, pilot)
        assert switches(fake) == ["float32"]
        assert len(fake.app.chat.conversation.messages) == 2
