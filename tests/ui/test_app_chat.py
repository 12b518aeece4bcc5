"""App flows around the chat with a scripted engine: send, stream, stop, retry, keys, quit."""

from __future__ import annotations

import threading

import pytest
from app_helpers import SIZE, FakeApp, notifications, ready, ready_app, reply_done, send, wait_for

from fixtures.fake_engine import DEFAULT_REPLY, Script
from mergechat.ui.widgets.assistant_message import AssistantMessage
from mergechat.ui.widgets.conversation_view import UserMessage

LONG_REPLY = [f" word{i}" for i in range(400)]


def replies(fake: FakeApp) -> list[AssistantMessage]:
    return list(fake.app.chat.query(AssistantMessage))


async def test_send_streams_markdown_and_shows_a_footer() -> None:
    fake = FakeApp(Script(reply=LONG_REPLY[:100], token_delay=0.03))
    async with ready_app(fake) as pilot:
        await send(pilot, "hello there")
        # Part of the text is on screen while the reply is still streaming.
        await wait_for(
            pilot, lambda: bool(replies(fake)) and "word3" in replies(fake)[0].body.source
        )
        assert fake.app.chat.phase == "generating"
        assert replies(fake)[0].streaming
        await reply_done(fake, pilot, footer="tokens")
        reply = replies(fake)[0]
        assert reply.body.source == "".join(LONG_REPLY[:100])
        assert reply.footer_text == "100 tokens · 25.0 tok/s · TTFT 0.05 s · bfloat16 · cpu"
        assert [m.role for m in fake.app.chat.conversation.messages] == ["user", "assistant"]
        assert [u.text for u in fake.app.chat.query(UserMessage)] == ["hello there"]
        assert fake.app.chat.prompt.text == ""
        assert fake.engine is not None
        messages, _settings, continue_last = fake.engine.generations[0]
        assert [m.content for m in messages] == ["hello there"]
        assert continue_last is False


@pytest.mark.parametrize("key", ["escape", "ctrl+c"])
async def test_escape_or_ctrl_c_stops_and_keeps_the_partial_reply(key: str) -> None:
    fake = FakeApp(Script(reply=LONG_REPLY, token_delay=0.01))
    async with ready_app(fake) as pilot:
        await send(pilot, "go")
        await wait_for(
            pilot, lambda: bool(replies(fake)) and "word5" in replies(fake)[0].body.source
        )
        await pilot.press(key)
        await reply_done(fake, pilot, footer="tokens")
        reply = replies(fake)[0]
        assert reply.footer_text.endswith("· stopped")
        text = fake.app.chat.conversation.messages[-1].content
        assert text.startswith(" word0 word1") and len(text) < len("".join(LONG_REPLY))
        assert reply.body.source == text
        assert fake.engine is not None and fake.engine.cancels == 1
        assert fake.app.is_running and fake.app.return_code is None
        # Idle ctrl+c says how to quit instead of quitting.
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert fake.app.is_running
        assert any("ctrl+q" in n.message for n in notifications(fake.app))


async def test_regenerate_replaces_the_last_reply() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await send(pilot, "hi")
        await reply_done(fake, pilot, footer="tokens")
        fake.script.reply = ["Another", " answer"]
        await pilot.press("ctrl+r")
        await reply_done(fake, pilot, count=2, footer="tokens")
        assert fake.engine is not None
        messages, _, _ = fake.engine.generations[1]
        assert [(m.role, m.content) for m in messages] == [("user", "hi")]
        assert [r.body.source for r in replies(fake)] == ["Another answer"]
        assert [m.content for m in fake.app.chat.conversation.messages] == ["hi", "Another answer"]


async def test_continue_extends_a_reply_that_hit_the_token_limit(tmp_path: object) -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        fake.app.config = _with_max_tokens(fake.app.config, 3)
        await send(pilot, "hi")
        await reply_done(fake, pilot, footer="tokens")
        assert replies(fake)[0].footer_text.endswith("hit max_new_tokens")
        assert fake.app.chat.conversation.can_continue
        fake.script.reply = [" more", " text"]
        await pilot.press("ctrl+o")
        await reply_done(fake, pilot, count=2, footer="tokens")
        assert fake.engine is not None
        messages, _, continue_last = fake.engine.generations[1]
        assert continue_last is True
        assert messages[-1].role == "assistant" and messages[-1].content == "Hello! I"
        assert len(replies(fake)) == 1
        assert replies(fake)[0].body.source == "Hello! I more text"
        assert fake.app.chat.conversation.messages[-1].content == "Hello! I more text"
        assert not fake.app.chat.conversation.can_continue


def _with_max_tokens(config: object, n: int) -> object:
    from dataclasses import replace

    return replace(config, generation=replace(config.generation, max_new_tokens=n))  # type: ignore[type-var, attr-defined]


async def test_new_chat_clears_everything() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await send(pilot, "hi")
        await reply_done(fake, pilot, footer="tokens")
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: not fake.app.chat.view.children)
        assert fake.app.chat.conversation.messages == []
        assert fake.app.chat.status.info.tokens_per_s is None
        await send(pilot, "again")
        await reply_done(fake, pilot, count=2, footer="tokens")
        assert fake.engine is not None
        assert [m.content for m in fake.engine.generations[1][0]] == ["again"]


async def test_up_and_down_recall_earlier_prompts() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        for prompt in ("first", "second"):
            await send(pilot, prompt)
            await reply_done(fake, pilot, count=1 if prompt == "first" else 2, footer="tokens")
        prompt_input = fake.app.chat.prompt
        await pilot.press(*"draft")
        await pilot.press("up")
        assert prompt_input.text == "second"
        await pilot.press("up")
        assert prompt_input.text == "first"
        await pilot.press("up")  # nothing older: stays
        assert prompt_input.text == "first"
        await pilot.press("down")
        assert prompt_input.text == "second"
        await pilot.press("down")
        assert prompt_input.text == "draft"


async def test_ctrl_j_inserts_a_newline_and_enter_sends_both_lines() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await pilot.press(*"one")
        await pilot.press("ctrl+j")
        await pilot.press(*"two")
        assert fake.app.chat.prompt.text == "one\ntwo"
        assert fake.engine is not None and fake.engine.generations == []
        # On a multi-line text, up moves the cursor instead of recalling.
        await pilot.press("enter")
        await reply_done(fake, pilot, footer="tokens")
        assert fake.engine.generations[0][0][-1].content == "one\ntwo"


async def test_typing_works_while_loading_but_sending_waits() -> None:
    gate = threading.Event()
    fake = FakeApp(Script(load_gate=gate))
    async with fake.app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: fake.app.chat.load_progress.active)
        await send(pilot, "early")
        assert fake.app.chat.phase == "loading"
        assert fake.app.chat.prompt.text == "early"
        assert fake.engine is None or fake.engine.generations == []
        assert any("still loading" in n.message for n in notifications(fake.app))
        gate.set()
        await ready(fake, pilot)
        await pilot.press("enter")
        await reply_done(fake, pilot, footer="tokens")
        assert fake.app.chat.conversation.messages[0].content == "early"


async def test_ctrl_q_exits_with_code_zero() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert fake.app.return_code == 0
    assert fake.engine is not None and fake.engine.shut_down


async def test_second_enter_while_streaming_is_refused() -> None:
    gate = threading.Event()
    fake = FakeApp(Script(reply_gate=gate))
    async with ready_app(fake) as pilot:
        await send(pilot, "one")
        await send(pilot, "two")
        assert fake.app.chat.prompt.text == "two"
        assert any("Esc to stop" in n.message for n in notifications(fake.app))
        gate.set()
        await reply_done(fake, pilot, footer="tokens")
        assert fake.engine is not None and len(fake.engine.generations) == 1


async def test_default_reply_text() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await send(pilot, "hi")
        await reply_done(fake, pilot, footer="tokens")
        assert replies(fake)[0].body.source == "".join(DEFAULT_REPLY)


async def test_ctrl_c_with_a_selection_copies_instead_of_stopping() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await pilot.press(*"copy me")
        copied: list[str] = []
        fake.app.copy_to_clipboard = copied.append  # type: ignore[method-assign]
        prompt_input = fake.app.chat.prompt
        prompt_input.select_all()
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert copied == ["copy me"]
        assert not any("ctrl+q" in n.message for n in notifications(fake.app))
