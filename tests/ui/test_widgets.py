"""Each chat widget in a small host app that loads the real stylesheet."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult
from textual.widget import Widget

import mergechat.ui
from mergechat.core.api import ReplyStats
from mergechat.core.streaming import ReplyStream
from mergechat.ui.widgets.assistant_message import AssistantMessage, format_footer
from mergechat.ui.widgets.conversation_view import ConversationView
from mergechat.ui.widgets.load_progress import LoadProgress
from mergechat.ui.widgets.prompt_input import PromptInput
from mergechat.ui.widgets.status_bar import StatusBar, StatusInfo

CSS = Path(mergechat.ui.__file__).parent / "styles" / "app.tcss"


class Host(App[None]):
    CSS_PATH = CSS

    def __init__(self, *widgets: Widget) -> None:
        super().__init__()
        self._widgets = widgets
        self.messages: list[Any] = []

    def compose(self) -> ComposeResult:
        yield from self._widgets

    def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        self.messages.append(message)

    def on_assistant_message_progress(self, message: AssistantMessage.Progress) -> None:
        self.messages.append(message)


async def test_prompt_input_keys_and_history() -> None:
    prompt = PromptInput()
    app = Host(prompt)
    async with app.run_test() as pilot:
        prompt.focus()
        await pilot.press("a", "ctrl+j", "b", "enter")
        await pilot.pause()
        assert [m.text for m in app.messages] == ["a\nb"]
        assert prompt.text == "a\nb"  # the screen decides when to clear
        prompt.accept()
        assert prompt.text == "" and prompt.prompt_history == ["a\nb"]
        await pilot.press("up")
        assert prompt.text == "a\nb" and prompt.cursor_location == (1, 1)
        await pilot.press("up")  # second line -> first line: a cursor move, not a recall
        assert prompt.cursor_location[0] == 0 and prompt.text == "a\nb"
        await pilot.press("down", "down")
        assert prompt.text == ""


def _stats() -> ReplyStats:
    return ReplyStats(3, 40, 0.123, 1.0, 41.46, 43, 2048, "bfloat16", "cuda:0")


def test_footer_text() -> None:
    assert format_footer(_stats(), "complete") == (
        "40 tokens · 41.5 tok/s · TTFT 0.12 s · bfloat16 · cuda:0"
    )
    assert format_footer(_stats(), "stopped").endswith("· cuda:0 · stopped")
    assert format_footer(_stats(), "length").endswith("· hit max_new_tokens")


async def test_assistant_message_streams_in_batches_then_renders_once() -> None:
    reply = AssistantMessage()
    app = Host(reply)
    words = [f"w{i} " for i in range(200)]
    stream = ReplyStream(lambda ids: "".join(words[i] for i in ids))

    def produce() -> None:
        for i in range(len(words)):
            stream.push([i])
            time.sleep(0.002)
        stream.close()

    async with app.run_test() as pilot:
        reply.begin(stream)
        thread = threading.Thread(target=produce)
        thread.start()
        while thread.is_alive():
            await pilot.pause(0.02)
        await pilot.pause(0.2)
        progress = [m for m in app.messages if isinstance(m, AssistantMessage.Progress)]
        # Batched: far fewer updates than tokens, and the last one saw every token.
        assert 1 < len(progress) < len(words) / 2
        assert progress[-1].tokens == len(words)
        assert reply.body.source == "".join(words)
        await reply.finish("".join(words).strip(), "done")
        assert reply.body.source == "".join(words).strip()
        assert reply.footer_text == "done" and not reply.streaming


async def test_assistant_message_failure_keeps_partial_text() -> None:
    reply = AssistantMessage()
    app = Host(reply)
    async with app.run_test():
        reply.begin(ReplyStream(lambda ids: ""))
        await reply.fail("boom", "partial")
        assert reply.body.source == "partial" and reply.footer_text == "failed: boom"


async def test_conversation_view_follows_the_bottom_until_scrolled_up() -> None:
    view = ConversationView()
    app = Host(view)
    async with app.run_test(size=(60, 12)) as pilot:
        for i in range(15):
            await view.add_user(f"message {i}")
        await pilot.pause()
        assert view.scroll_y == view.max_scroll_y > 0
        view.scroll_home(animate=False)  # the user scrolls up
        await pilot.pause()
        for i in range(5):
            await view.add_user(f"more {i}")
        await pilot.pause()
        assert view.scroll_y == 0
        view.scroll_end(animate=False)  # back at the bottom: following again
        await pilot.pause()
        await view.add_user("last")
        await pilot.pause()
        assert view.scroll_y == view.max_scroll_y
        assert view.last_assistant() is None
        await view.add_assistant("hi")
        assert view.last_assistant() is not None
        await view.clear()
        assert not view.children


async def test_status_bar_and_load_progress() -> None:
    status, progress = StatusBar(), LoadProgress()
    app = Host(status, progress)
    async with app.run_test():
        assert str(status.render_content(status.info)) == "  starting "
        status.update_info(phase="loading", progress=0.256, model="m")
        assert str(status.render_content(status.info)) == " m │  loading 26% "
        assert status.has_class("-loading")
        status.set_info(StatusInfo(phase="error"))
        assert status.has_class("-error") and not status.has_class("-loading")
        assert not progress.active
        progress.show_progress("reading", 0.5, "shard 1/2")
        assert progress.active and progress.stage_text == "reading: shard 1/2"
        progress.hide()
        assert not progress.active


def test_stylesheet_uses_theme_colours_only() -> None:
    """Hard-coded colours would break the 16-colour and light themes; variables adapt."""
    import re

    text = CSS.read_text()
    assert not re.search(r"#[0-9a-fA-F]{3,8}\b|\brgba?\(|\bhsla?\(|\bansi_", text)
    assert "$primary" in text and "$accent" in text
