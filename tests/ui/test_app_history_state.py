"""The app's hold on its conversation: one writer, the one reopened, what a cut reply records,
the context shown after a resume, and an export that never overwrites unasked."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_helpers import (
    MODEL_PATH,
    FakeApp,
    notifications,
    ready_app,
    send_and_wait,
    wait_for,
)
from test_app_history import LONG_REPLY, shown, store
from textual.widgets import Input

from fixtures.fake_engine import Script
from mergechat.cli.oneshot_history import OneShotHistory
from mergechat.core.model.target import model_key
from mergechat.core.store.lock import ConversationLocks
from mergechat.ui.options import AppOptions
from mergechat.ui.screens.confirm import ConfirmScreen
from mergechat.ui.screens.conversations import ConversationsScreen
from mergechat.ui.screens.export import ExportScreen


async def _chat_once(text: str) -> int:
    """Run the app, send ``text``, quit; the conversation's id."""
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await send_and_wait(fake, pilot, text, 1)
        conv = fake.app.history.conversation_id
    assert conv is not None
    return conv


async def test_a_conversation_open_in_another_instance_is_not_continued() -> None:
    first = await _chat_once("first question")
    with store() as s:
        elsewhere = ConversationLocks.beside(s.path)  # what another running mergechat holds
    assert elsewhere.acquire(first) is None
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await wait_for(
            pilot, lambda: any("another mergechat" in n.message for n in notifications(fake.app))
        )
        assert shown(fake) == [] and fake.app.chat.conversation.messages == []
        await send_and_wait(fake, pilot, "my own", 1)
        mine = fake.app.history.conversation_id
        assert mine not in (None, first)
        # Opening it from the list is refused too: the chat on screen stays.
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(fake.app.screen, ConversationsScreen))
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: fake.app.screen is fake.app.chat)
        await pilot.pause(0.1)
        assert fake.app.history.conversation_id == mine
    elsewhere.release(first)
    with store() as s:
        assert [m.text for m in s.get_conversation(first).messages][:1] == ["first question"]
        assert len(s.get_conversation(first).messages) == 2


async def test_quitting_mid_reply_keeps_what_produced_it() -> None:
    options = AppOptions(model_path=MODEL_PATH, generation_overrides={"temperature": 0.4})
    fake = FakeApp(Script(reply=LONG_REPLY, token_delay=0.01), options)
    async with ready_app(fake) as pilot:
        await pilot.press(*"go")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "word5" in (shown(fake) or [("", "", "")])[-1][1])
        await pilot.press("ctrl+q")
    with store() as s:
        reply = s.get_conversation(s.list_conversations()[0].id).messages[1]
    assert reply.state == "stopped" and "word5" in reply.text
    assert (reply.device, reply.dtype) == ("cpu", "bfloat16")
    assert reply.model_path == model_key(MODEL_PATH)
    assert reply.params is not None and reply.params["temperature"] == 0.4


async def test_a_resumed_conversation_shows_its_context_use() -> None:
    await _chat_once("count me")
    with store() as s:
        stored = s.get_conversation(s.list_conversations()[0].id).messages[-1].context_used
    assert stored
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await wait_for(pilot, lambda: len(shown(fake)) == 2)
        assert fake.app.chat.status.info.context_used == stored
        bar = fake.app.chat.status
        assert f"ctx {stored}/" in bar.render_content(bar.info).plain


async def test_a_one_shot_run_does_not_replace_the_app_conversation() -> None:
    kept = await _chat_once("app chat")
    one_shot = OneShotHistory.open(True)
    one_shot.begin(MODEL_PATH, "one-shot question")
    one_shot.interrupted("one-shot answer")
    one_shot.close()
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await wait_for(pilot, lambda: len(shown(fake)) == 2)
        assert fake.app.history.conversation_id == kept
        assert shown(fake)[0][1] == "app chat"
        # ctrl+n, then quit: the next start is a new chat, not the older conversation.
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: shown(fake) == [])
    again = FakeApp()
    async with ready_app(again) as pilot:
        await pilot.pause(0.2)
        assert shown(again) == [] and again.app.history.conversation_id is None


async def test_export_to_an_existing_file_asks_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mergechat.core.store.export.default_export_dir", lambda: tmp_path)
    existing = tmp_path / "mine.md"
    existing.write_text("precious")
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await send_and_wait(fake, pilot, "export me", 1)
        for answer in ("n", "y"):
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(fake.app.screen, ExportScreen))
            fake.app.screen.query_one(Input).value = str(existing)
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(fake.app.screen, ConfirmScreen))
            await pilot.press(answer)
            await wait_for(pilot, lambda: fake.app.screen is fake.app.chat)
            await pilot.pause(0.05)
            if answer == "n":
                assert existing.read_text() == "precious"
        assert "# export me" in existing.read_text()
