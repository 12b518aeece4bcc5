"""Issue 16: a reply's or a stored message's escape sequences are shown as text in the app.

The check is on what Textual would write to the terminal: the full screen update, rendered
to the exact terminal string, holds no OSC 52 / OSC 0 / clear-screen sequence from the text.
"""

from __future__ import annotations

from app_helpers import FakeApp, frame_bytes, notifications, ready_app, wait_for

from fixtures.fake_engine import Script
from mergechat.core.store.records import Conversation, StoredMessage
from mergechat.ui.transcript import show_transcript
from mergechat.ui.widgets.assistant_message import AssistantMessage
from mergechat.ui.widgets.conversation_view import ConversationView, UserMessage

ESCAPES = "\x1b]52;c;cHduZWQ=\x07\x1b]0;pwned-title\x07\x1b[2J"
RAW_MARKERS = ("\x1b]52;", "\x1b]0;pwned", "\x1b[2J", "\x07")


def assert_shown_as_text(painted: str) -> None:
    for marker in RAW_MARKERS:
        assert marker not in painted, repr(marker)
    assert "\\u001b]52;c;cHduZWQ=" in painted


async def test_a_streaming_reply_with_escapes_is_painted_as_text() -> None:
    fake = FakeApp(Script(reply=["Hi ", ESCAPES, " there", ESCAPES], token_delay=0.05))
    async with ready_app(fake) as pilot:
        await pilot.press(*"hello", "enter")
        replies = lambda: list(fake.app.chat.query(AssistantMessage))  # noqa: E731
        await wait_for(pilot, lambda: bool(replies()) and "pwned" in replies()[0].body.source)
        await pilot.pause()
        assert_shown_as_text(frame_bytes(fake.app))  # mid-stream (the chunked widgets)
        await wait_for(pilot, lambda: fake.app.chat.phase == "ready")
        await wait_for(pilot, lambda: "tokens" in replies()[0].footer_text)
        await pilot.pause()
        assert_shown_as_text(frame_bytes(fake.app))  # the final render
        # The text itself is kept as the model wrote it (copy and history get the real bytes).
        assert replies()[0].body.source == f"Hi {ESCAPES} there{ESCAPES}"


async def test_a_resumed_conversation_with_escapes_is_painted_as_text() -> None:
    messages = (
        StoredMessage(1, 1, "user", f"question {ESCAPES}", 0.0, "complete"),
        StoredMessage(2, 1, "assistant", f"answer {ESCAPES}", 1.0, "failed", error=ESCAPES),
    )
    conversation = Conversation(1, "t", "/m", 0.0, 1.0, False, messages)
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        view = fake.app.chat.query_one(ConversationView)
        show_transcript(view, conversation)
        await wait_for(pilot, lambda: bool(view.query(UserMessage)))
        await pilot.pause()
        painted = frame_bytes(fake.app)
        assert_shown_as_text(painted)
        assert "question \\u001b]52;" in painted and "answer \\u001b]52;" in painted
        assert view.query_one(UserMessage).text == f"question {ESCAPES}"


async def test_notifications_show_escapes_as_text() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        fake.app.notify(f"cannot read /m/{ESCAPES}", title=ESCAPES, markup=False)
        await pilot.pause()
        shown = [(n.title, n.message) for n in notifications(fake.app)]
        assert shown[-1] == (
            "\\u001b]52;c;cHduZWQ=\\u0007\\u001b]0;pwned-title\\u0007\\u001b[2J",
            "cannot read /m/\\u001b]52;c;cHduZWQ=\\u0007\\u001b]0;pwned-title\\u0007\\u001b[2J",
        )
