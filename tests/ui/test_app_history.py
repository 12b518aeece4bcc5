"""The app with the real history store: saving as it chats, resume, conversations, copy, export."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from app_helpers import (
    MODEL_PATH,
    FakeApp,
    notifications,
    ready_app,
    reply_done,
    send,
    send_and_wait,
    wait_for,
    write_config,
)
from textual.pilot import Pilot
from textual.widgets import Input

from fixtures.fake_engine import DEFAULT_REPLY, Script
from mergechat.core.model.target import model_key
from mergechat.core.store.records import Conversation
from mergechat.core.store.store import HistoryStore, default_path
from mergechat.ui.clipboard import CopyMenu
from mergechat.ui.options import AppOptions
from mergechat.ui.screens.confirm import ConfirmScreen
from mergechat.ui.screens.conversations import ConversationsScreen
from mergechat.ui.screens.export import ExportScreen
from mergechat.ui.widgets.assistant_message import AssistantMessage
from mergechat.ui.widgets.conversation_view import UserMessage

REPLY = "".join(DEFAULT_REPLY)
LONG_REPLY = [f" word{i}" for i in range(400)]


@contextmanager
def store() -> Iterator[HistoryStore]:
    """A second connection to the app's database (the per-test MERGECHAT_DATA_DIR)."""
    with HistoryStore.open() as s:
        yield s


def only_conversation() -> Conversation:
    with store() as s:
        summaries = s.list_conversations()
        assert len(summaries) == 1, summaries
        return s.get_conversation(summaries[0].id)


async def send_long(fake: FakeApp, pilot: Pilot[object], text: str) -> None:
    """Send ``text`` and wait until its `LONG_REPLY` streams on screen (word10 is shown)."""
    await send(pilot, text)
    await wait_for(pilot, lambda: "word10" in (shown(fake) or [("", "", "")])[-1][1])


def shown(fake: FakeApp) -> list[tuple[str, str, str]]:
    """(kind, text, footer) of every message on screen (those still mounting are left out)."""
    rows = []
    for widget in fake.app.chat.view.children:
        if not widget.is_mounted:
            continue
        if isinstance(widget, UserMessage):
            rows.append(("user", widget.text, ""))
        elif isinstance(widget, AssistantMessage):
            rows.append(("assistant", widget.body.source, widget.footer_text))
    return rows


async def test_the_sent_message_is_saved_before_the_engine_is_asked() -> None:
    gate = threading.Event()
    fake = FakeApp(Script(reply_gate=gate))
    seen_at_generate: list[list[tuple[str, str, str]]] = []
    async with ready_app(fake) as pilot:
        assert fake.engine is not None
        engine_generate = fake.engine.generate

        def generate(*args: object, **kwargs: object) -> int:
            with store() as s:
                conv = s.get_conversation(s.list_conversations()[0].id)
            seen_at_generate.append([(m.role, m.text, m.state) for m in conv.messages])
            return engine_generate(*args, **kwargs)  # type: ignore[arg-type]

        fake.engine.generate = generate  # type: ignore[method-assign]
        await pilot.press(*"hello there")
        await pilot.press("enter")
        await wait_for(pilot, lambda: bool(seen_at_generate))
        assert seen_at_generate[0] == [
            ("user", "hello there", "complete"),
            ("assistant", "", "streaming"),
        ]
        gate.set()
        await reply_done(fake, pilot, 1)
    conv = only_conversation()
    assert conv.model_path == model_key(MODEL_PATH)
    assert conv.title == "hello there"
    assert [(m.role, m.text, m.state) for m in conv.messages] == [
        ("user", "hello there", "complete"),
        ("assistant", REPLY, "complete"),
    ]


async def test_a_finished_reply_is_saved_with_its_settings_and_stats() -> None:
    options = AppOptions(
        model_path=MODEL_PATH, generation_overrides={"temperature": 0.0, "max_new_tokens": 5}
    )
    fake = FakeApp(options=options)
    async with ready_app(fake) as pilot:
        await send_and_wait(fake, pilot, "hi", 1)
    reply = only_conversation().messages[1]
    assert (reply.text, reply.state, reply.finish_reason) == ("Hello! I am a", "complete", "length")
    assert (reply.device, reply.dtype, reply.new_tokens) == ("cpu", "bfloat16", 5)
    assert (reply.tokens_per_s, reply.ttft_s, reply.total_s) == (25.0, 0.05, 0.5)
    assert reply.model_path == model_key(MODEL_PATH)
    settings = reply.generation_settings()
    assert settings is not None
    assert (settings.temperature, settings.max_new_tokens) == (0.0, 5)


async def test_a_streaming_reply_is_saved_while_it_streams_and_a_stop_is_saved() -> None:
    fake = FakeApp(Script(reply=LONG_REPLY, token_delay=0.01))
    async with ready_app(fake) as pilot:
        fake.app.history.interval_s = 0.05  # the recorder's throttle, shortened for the test

        def saved_reply() -> str:
            with store() as s:
                conv = s.get_conversation(s.list_conversations()[0].id)
            return conv.messages[1].text if len(conv.messages) > 1 else ""

        await pilot.press(*"go")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "word20" in saved_reply())
        assert fake.app.chat.conversation.busy
        assert only_conversation().messages[1].state == "streaming"
        await pilot.press("escape")
        await reply_done(fake, pilot, 1)
    reply = only_conversation().messages[1]
    assert reply.state == "stopped" and reply.finish_reason == "stopped"
    assert reply.text == fake.app.chat.conversation.messages[-1].content
    assert "word20" in reply.text and len(reply.text) < len("".join(LONG_REPLY))


async def test_regenerate_replaces_the_saved_reply_and_a_failure_is_saved() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await send_and_wait(fake, pilot, "hi", 1)
        fake.script.reply = ["Second", " try"]
        await pilot.press("ctrl+r")
        await reply_done(fake, pilot, 2)
        assert [(m.role, m.text) for m in only_conversation().messages] == [
            ("user", "hi"),
            ("assistant", "Second try"),
        ]
        fake.script.reply_error = "CUDA out of memory"
        fake.script.reply = ["a", "b", "c", "d"]
        await pilot.press(*"more")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "failed" in shown(fake)[-1][2])
    last = only_conversation().messages[-1]
    assert (last.role, last.text, last.state, last.error) == (
        "assistant",
        "ab",
        "failed",
        "CUDA out of memory",
    )


async def test_a_restart_reopens_the_last_conversation_with_its_footers() -> None:
    first = FakeApp()
    async with ready_app(first) as pilot:
        await send_and_wait(first, pilot, "first question", 1)
    second = FakeApp()
    async with ready_app(second) as pilot:
        await wait_for(pilot, lambda: len(shown(second)) == 2)
        assert shown(second) == [
            ("user", "first question", ""),
            ("assistant", REPLY, "8 tokens · 25.0 tok/s · TTFT 0.05 s · bfloat16 · cpu"),
        ]
        assert any("Continuing “first question”" in n.message for n in notifications(second.app))
        await send_and_wait(second, pilot, "and then?", 1)
        assert second.engine is not None
        context = second.engine.generations[0][0]
        assert [(m.role, m.content) for m in context] == [
            ("user", "first question"),
            ("assistant", REPLY),
            ("user", "and then?"),
        ]
    assert [m.text for m in only_conversation().messages] == [
        "first question",
        REPLY,
        "and then?",
        REPLY,
    ]


async def test_with_resume_off_a_restart_starts_a_new_conversation() -> None:
    first = FakeApp()
    async with ready_app(first) as pilot:
        await send_and_wait(first, pilot, "old", 1)
    write_config("[history]\nresume_last = false\n")
    second = FakeApp()
    async with ready_app(second) as pilot:
        await pilot.pause(0.1)
        assert shown(second) == []
        await send_and_wait(second, pilot, "new", 1)
    with store() as s:
        assert [c.title for c in s.list_conversations()] == ["new", "old"]


async def test_a_reply_cut_by_max_new_tokens_continues_after_a_restart() -> None:
    options = AppOptions(model_path=MODEL_PATH, generation_overrides={"max_new_tokens": 3})
    first = FakeApp(options=options)
    async with ready_app(first) as pilot:
        await send_and_wait(first, pilot, "hi", 1)
    second = FakeApp(Script(reply=[" and", " more"]))
    async with ready_app(second) as pilot:
        await wait_for(pilot, lambda: len(shown(second)) == 2)
        assert shown(second)[1][2].endswith("hit max_new_tokens")
        assert second.app.chat.conversation.can_continue
        await pilot.press("ctrl+o")
        await reply_done(second, pilot, 1)
        assert second.engine is not None and second.engine.generations[0][2] is True
        assert shown(second)[1][1] == "Hello! I and more"
    assert [m.text for m in only_conversation().messages] == ["hi", "Hello! I and more"]


def _seed(model: str, question: str) -> int:
    with store() as s:
        conv = s.new_conversation(model)
        s.add_message(conv, "user", question)
        s.add_message(conv, "assistant", f"answer to {question}")
        return conv


async def test_conversations_screen_opens_renames_and_deletes_through_the_app() -> None:
    other = _seed("/models/other", "about merges")
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await send_and_wait(fake, pilot, "current chat", 1)
        current = fake.app.history.conversation_id
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(fake.app.screen, ConversationsScreen))
        # Newest first: the chat just held, then the seeded one. Rename the seeded one.
        await pilot.press("down", "r")
        await pilot.press(*"Merge notes")
        await pilot.press("enter")
        await pilot.pause()
        with store() as s:
            assert s.get_conversation(other).title == "Merge notes"
        await pilot.press("enter")  # open it
        await wait_for(pilot, lambda: fake.app.screen is fake.app.chat)
        await wait_for(pilot, lambda: len(shown(fake)) == 2)
        assert fake.app.history.conversation_id == other
        assert [row[1] for row in shown(fake)] == ["about merges", "answer to about merges"]
        assert [m.content for m in fake.app.chat.conversation.messages] == [
            "about merges",
            "answer to about merges",
        ]
        # Replies sent now extend the opened conversation.
        await send_and_wait(fake, pilot, "more please", 1)
        with store() as s:
            assert len(s.get_conversation(other).messages) == 4
        # Deleting the open conversation starts a new chat.
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(fake.app.screen, ConversationsScreen))
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(fake.app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: fake.app.history.conversation_id is None)
        await pilot.press("escape")
        await wait_for(pilot, lambda: fake.app.screen is fake.app.chat)
        await wait_for(pilot, lambda: shown(fake) == [])
        assert fake.app.chat.conversation.messages == []
        with store() as s:
            assert [c.id for c in s.list_conversations()] == [current]


async def test_opening_a_conversation_while_a_reply_streams_saves_it_as_stopped() -> None:
    other = _seed("/models/other", "elsewhere")
    fake = FakeApp(Script(reply=LONG_REPLY, token_delay=0.01))
    async with ready_app(fake) as pilot:
        await send_long(fake, pilot, "long one")
        streaming = fake.app.history.conversation_id
        assert streaming is not None
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(fake.app.screen, ConversationsScreen))
        await pilot.press("down", "enter")  # the seeded one, below the chat in progress
        await wait_for(pilot, lambda: fake.app.history.conversation_id == other)
        await wait_for(pilot, lambda: [row[1] for row in shown(fake)][:1] == ["elsewhere"])
        assert not fake.app.chat.conversation.busy and fake.app.chat.phase == "ready"
        await pilot.pause(0.2)  # the cancelled reply's last events arrive and are ignored
        assert len(shown(fake)) == 2
    with store() as s:
        assert len(s.get_conversation(other).messages) == 2  # untouched
        reply = s.get_conversation(streaming).messages[1]
    assert reply.state == "stopped" and "word10" in reply.text


async def test_copy_the_last_reply_and_a_code_block() -> None:
    reply = ["Use this:", "\n\n", "```python\n", "print(1)\n", "```"]
    fake = FakeApp(Script(reply=reply))
    async with ready_app(fake) as pilot:
        await pilot.press("ctrl+y")
        await pilot.pause()
        assert any("no reply to copy" in n.message for n in notifications(fake.app))
        await send_and_wait(fake, pilot, "code please", 1)
        await pilot.press("ctrl+y")
        await pilot.pause()
        assert fake.app.clipboard == "".join(reply)
        assert any("Copied the last reply" in n.message for n in notifications(fake.app))
        await pilot.press("f6")
        await wait_for(pilot, lambda: isinstance(fake.app.screen, CopyMenu))
        await pilot.press("1")  # the newest message: the reply
        await wait_for(
            pilot,
            lambda: isinstance(fake.app.screen, CopyMenu) and len(fake.app.screen.targets) == 2,
        )
        await pilot.press("2")  # its first code block
        await wait_for(pilot, lambda: fake.app.clipboard == "print(1)")
        await pilot.press("f6")
        await wait_for(pilot, lambda: isinstance(fake.app.screen, CopyMenu))
        await pilot.press("2")  # the user's message: no code blocks, copied at once
        await wait_for(pilot, lambda: fake.app.clipboard == "code please")
        assert fake.app.screen is fake.app.chat


async def test_export_writes_markdown_json_and_a_chosen_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = tmp_path / "Documents"
    documents.mkdir()
    monkeypatch.setattr("mergechat.core.store.export.default_export_dir", lambda: documents)
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        fake.app.chat.action_export("md")
        await pilot.pause()
        assert any("send a message first" in n.message for n in notifications(fake.app))
        await send_and_wait(fake, pilot, "export me", 1)
        fake.app.chat.action_export("md")
        fake.app.chat.action_export("json")
        await pilot.pause()
        markdown = (documents / "mergechat-1-export-me.md").read_text()
        assert "# export me" in markdown and REPLY in markdown and "bfloat16" in markdown
        data = json.loads((documents / "mergechat-1-export-me.json").read_text())
        assert [m["text"] for m in data["conversation"]["messages"]] == ["export me", REPLY]
        assert any(n.message.startswith("Exported as JSON to ") for n in notifications(fake.app))
        # Exporting again never overwrites the earlier export: the next free name is used.
        (documents / "mergechat-1-export-me.md").write_text("earlier")
        fake.app.chat.action_export("md")
        await pilot.pause()
        assert (documents / "mergechat-1-export-me.md").read_text() == "earlier"
        assert "# export me" in (documents / "mergechat-1-export-me-2.md").read_text()
        # ctrl+s asks for the file, prefilled with a free name; a .json name writes JSON.
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(fake.app.screen, ExportScreen))
        field = fake.app.screen.query_one(Input)
        assert field.value == str(documents / "mergechat-1-export-me-3.md")
        field.value = str(tmp_path / "chosen.json")
        await pilot.press("enter")
        await wait_for(pilot, lambda: (tmp_path / "chosen.json").exists())
        assert json.loads((tmp_path / "chosen.json").read_text())["format"]
        # A file that cannot be written is a notice, not a crash.
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(fake.app.screen, ExportScreen))
        fake.app.screen.query_one(Input).value = str(tmp_path / "no" / "such" / "dir" / "x.md")
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: any(n.title == "Export failed" for n in notifications(fake.app))
        )


async def test_a_corrupt_database_turns_history_off_and_the_app_still_chats() -> None:
    path = default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a database" * 100)
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        notices = [n for n in notifications(fake.app) if n.message.startswith("History is off")]
        assert len(notices) == 1 and "damaged" in notices[0].message
        await send_and_wait(fake, pilot, "still works", 1)
        assert shown(fake)[1][1] == REPLY
        await pilot.press("f4")
        await pilot.pause()
        assert fake.app.screen is fake.app.chat
        assert sum("History is off" in n.message for n in notifications(fake.app)) == 2
    assert path.read_bytes().startswith(b"this is not a database")


async def test_no_history_saves_nothing() -> None:
    fake = FakeApp(options=AppOptions(model_path=MODEL_PATH, no_history=True))
    async with ready_app(fake) as pilot:
        await send_and_wait(fake, pilot, "secret", 1)
        await pilot.press("f4")
        await pilot.pause()
        assert any("--no-history" in n.message for n in notifications(fake.app))
    assert not default_path().exists()


async def test_sigterm_saves_the_streaming_reply_and_exits_zero() -> None:
    fake = FakeApp(Script(reply=LONG_REPLY, token_delay=0.01))
    async with ready_app(fake) as pilot:
        await send_long(fake, pilot, "long")
        # Only with the app's handler in place: the default action would end pytest.
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(200):
            if fake.app.return_code is not None:
                break
            await asyncio.sleep(0.01)
    assert fake.app.return_code == 0
    # The handler is gone with the app: the default action is back.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    reply = only_conversation().messages[1]
    assert reply.state == "stopped" and "word10" in reply.text


def test_the_new_actions_are_in_the_palette_and_the_help() -> None:
    from mergechat.ui.bindings import help_rows
    from mergechat.ui.commands import palette_commands

    names = [c.name for c in palette_commands(FakeApp().app)]
    for wanted in (
        "Conversations",
        "Copy last reply",
        "Copy a message or code block",
        "Export conversation as Markdown",
        "Export conversation as JSON",
        "Export conversation to a file…",
    ):
        assert wanted in names
    rows = help_rows({"copy_last": "f9"})
    for row in (
        ("f4", "Conversations"),
        ("f9", "Copy last reply"),
        ("f6", "Copy a message or code block"),
        ("ctrl+s", "Export the conversation"),
    ):
        assert row in rows


async def test_the_copy_key_follows_the_keymap() -> None:
    write_config('[keymap]\ncopy_last = "f9"\n')
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await send_and_wait(fake, pilot, "hi", 1)
        await pilot.press("ctrl+y")  # no longer bound: the prompt's redo
        await pilot.pause()
        assert fake.app.clipboard == ""
        await pilot.press("f9")
        await wait_for(pilot, lambda: fake.app.clipboard == REPLY)
        assert not any("keymap" in n.message for n in notifications(fake.app))
