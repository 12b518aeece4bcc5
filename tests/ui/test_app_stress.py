"""The app with the real engine under faults and load: a reply failing mid-stream, a switch
queued while a reply streams, prompts and stops through the chat screen, and 200 prompts back to
back through the app's engine client (no leaked threads, flat memory)."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from app_helpers import notices, notifications, real_app, wait_for
from textual.pilot import Pilot
from transformers import LlamaForCausalLM

from mergechat.core.api import (
    ChatMessage,
    EngineEvent,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
)
from mergechat.core.dtypes import DType
from mergechat.core.engine import switching
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.store import HistoryStore, default_path
from mergechat.ui.app import MergechatApp
from mergechat.ui.widgets.assistant_message import AssistantMessage

pytestmark = pytest.mark.slow
SIZE = (100, 30)
WARM_UP = 20
PROMPTS = 200
#: Prompts typed into the chat screen (each mounts widgets and renders: ~0.5 s on 2 busy cores).
UI_PROMPTS = 9
SETTINGS = GenerationSettings(max_new_tokens=4, temperature=0.0)
RSS_MARGIN_MB = 12.0


def _app(model: Path, max_new_tokens: int = 4) -> MergechatApp:
    return real_app(model, dtype="bfloat16", max_new_tokens=max_new_tokens, temperature=0.0)


async def _ready(app: MergechatApp, pilot: Pilot[object]) -> None:
    """Until the model is loaded and no reply is in flight."""
    chat = app.chat
    await wait_for(
        pilot, lambda: chat.phase in ("ready", "error") and not chat.conversation.busy, 120
    )
    assert chat.phase == "ready", notices(app)


async def _send(app: MergechatApp, pilot: Pilot[object], text: str) -> None:
    """Type ``text`` into the prompt and send it, as Enter does."""
    app.chat.prompt.load_text(text)
    await pilot.press("enter")


def ask(text: str) -> list[ChatMessage]:
    return [ChatMessage("user", text)]


def _replies(app: MergechatApp) -> list[AssistantMessage]:
    return list(app.chat.query(AssistantMessage))


def _rss_mb() -> float:
    gc.collect()
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _saved_messages() -> list[tuple[str, str, str]]:
    with HistoryStore.open(default_path()) as store:
        return [
            (m.role, m.state, m.text)
            for s in store.list_conversations()
            for m in store.get_conversation(s.id).messages
        ]


async def test_a_reply_failing_mid_stream_is_marked_failed_and_the_next_prompt_works(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_forward = LlamaForCausalLM.forward
    calls = {"n": 0, "armed": False}

    def fails_on_the_fifth_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if calls["armed"]:
            calls["n"] += 1
            if calls["n"] == 5:  # the prefill and three decode steps went through
                calls["armed"] = False
                raise RuntimeError("injected fault in the forward pass")
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", fails_on_the_fifth_call)
    # The fault is patched into this process's model code: the engine must run here, too.
    monkeypatch.setenv("MERGECHAT_ENGINE", "thread")
    app = _app(tiny_model_dir, max_new_tokens=8)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        engine_thread = next(t for t in threading.enumerate() if t.name == "mergechat-engine")
        calls["armed"] = True
        await _send(app, pilot, "Hello")
        await _ready(app, pilot)
        failed = _replies(app)[-1]
        await wait_for(pilot, lambda: failed.footer_text.startswith("failed:"))
        assert failed.footer_text == "failed: RuntimeError: injected fault in the forward pass"
        partial = failed.body.source
        assert partial  # the partial reply stays on screen
        assert any(n.title == "Reply failed" for n in notifications(app))
        # A failed reply is not part of the context.
        assert [m.role for m in app.chat.conversation.messages] == ["user"]
        assert engine_thread.is_alive()

        await _send(app, pilot, "Hello again")
        await _ready(app, pilot)
        answered = _replies(app)[-1]
        await wait_for(pilot, lambda: "tokens" in answered.footer_text)
        roles = [m.role for m in app.chat.conversation.messages]
        assert roles == ["user", "user", "assistant"]
        assert engine_thread.is_alive()
    saved = _saved_messages()
    assert [(role, state) for role, state, _ in saved] == [
        ("user", "complete"),
        ("assistant", "failed"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert saved[1][2] == partial


class _Valve:
    """Holds the engine thread at a point until the test opens it, so the test (not the
    machine's speed) decides whether a reply is still streaming or a switch still running."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()
        self._passes: int | None = None

    def close_after(self, passes: int) -> None:
        """Let ``passes`` more calls through, then hold the next ones until `open`."""
        self._passes = passes
        self._open.clear()

    def open(self) -> None:
        self._passes = None
        self._open.set()

    def wait(self) -> None:
        """Called on the engine thread at the held point."""
        if self._passes is not None and self._passes > 0:
            self._passes -= 1
            return
        self._open.wait(30)


async def test_a_switch_asked_for_while_a_reply_streams_is_queued_and_runs_after_it(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_forward, real_switch = LlamaForCausalLM.forward, switching.switch
    # A reply streams its prefill and a few tokens, then waits for the test; a switch has
    # emitted SwitchStarted and cast the weights, then waits before it reports the outcome.
    tokens, switch_outcome = _Valve(), _Valve()

    def held_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        tokens.wait()
        return real_forward(self, *args, **kwargs)

    def held_switch(*args: Any, **kwargs: Any) -> Any:
        result = real_switch(*args, **kwargs)
        switch_outcome.wait()
        return result

    monkeypatch.setattr(LlamaForCausalLM, "forward", held_forward)
    monkeypatch.setattr(switching, "switch", held_switch)
    monkeypatch.setenv("MERGECHAT_ENGINE", "thread")  # the valves are patched into this process
    app = _app(tiny_model_dir, max_new_tokens=400)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        chat = app.chat
        tokens.close_after(3)
        await _send(app, pilot, "Tell me a long story")
        await wait_for(
            pilot, lambda: chat.conversation.busy and _replies(app) and _replies(app)[-1].streaming
        )
        asked: list[str] = []
        switch_dtype = app.engine.switch_dtype

        def recorded_switch(dtype: DType) -> None:
            asked.append(dtype)
            switch_dtype(dtype)

        monkeypatch.setattr(app.engine, "switch_dtype", recorded_switch)
        app.switch_precision("float32")
        # Queued behind the reply, which goes on; the status bar says what comes next.
        assert chat.phase == "generating" and app.switcher.queued == "float32" and asked == []
        assert chat.status.info.queued_dtype == "float32"
        await pilot.press("escape")  # the reply stops; the queued switch runs after it
        tokens.open()
        await wait_for(pilot, lambda: asked == ["float32"])
        await _ready(app, pilot)
        assert app.model_state is not None and app.model_state.dtype == "float32"
        assert chat.status.info.dtype == "float32" and chat.status.info.queued_dtype == ""
        stopped = _replies(app)[-1]
        await wait_for(pilot, lambda: "bfloat16 · cpu · stopped" in stopped.footer_text)

        switch_outcome.close_after(0)
        app.switch_precision("bfloat16")
        assert chat.phase == "switching"
        # While it switches: a prompt is refused (the text stays), Escape has nothing to stop.
        await _send(app, pilot, "Are you there?")
        await pilot.press("escape")
        assert chat.prompt.text == "Are you there?"
        assert chat.phase == "switching" and not chat.conversation.busy
        switch_outcome.open()
        await wait_for(pilot, lambda: chat.phase != "switching", 60)
        assert chat.phase == "ready"
        assert app.model_state is not None and app.model_state.dtype == "bfloat16"
        assert asked == ["float32", "bfloat16"]
        shown = len(_replies(app))
        tokens.close_after(3)
        chat.action_send()  # the text kept in the input, sent now
        await wait_for(pilot, lambda: len(_replies(app)) > shown and _replies(app)[-1].streaming)
        await pilot.press("escape")
        tokens.open()
        await _ready(app, pilot)
        reply = _replies(app)[-1]
        await wait_for(pilot, lambda: "bfloat16 · cpu · stopped" in reply.footer_text)


async def test_prompts_through_the_chat_screen_with_stops_and_new_chats(
    tiny_model_dir: Path,
) -> None:
    app = _app(tiny_model_dir, max_new_tokens=40)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.chat
        await _ready(app, pilot)
        stopped = 0
        for i in range(UI_PROMPTS):
            if i % 4 == 3:
                await pilot.press("ctrl+n")
            before = len(chat.conversation.messages)
            chat.prompt.load_text(f"Prompt number {i}")
            chat.action_send()  # what Enter does, without waiting for the screen to settle
            if i % 3 == 1:
                # Escape while the reply streams.
                await wait_for(pilot, lambda: chat.conversation.busy or chat.phase == "ready")
                await pilot.press("escape")
            await _ready(app, pilot)
            last = chat.conversation.last_finish
            assert last in ("complete", "length", "stopped"), (i, last)
            stopped += last == "stopped"
            # The user turn stays; a reply is kept unless it was stopped before any text.
            assert len(chat.conversation.messages) in (before + 1, before + 2)
        assert stopped >= 1
        assert not any(n.severity == "error" for n in notifications(app))
    saved = _saved_messages()
    assert sum(role == "user" for role, _, _ in saved) == UI_PROMPTS
    assert {state for role, state, _ in saved if role == "assistant"} <= {
        "complete",
        "stopped",
    }


class _Replies:
    """Records, on the UI thread, the reply events the app's router receives."""

    def __init__(self, app: MergechatApp) -> None:
        self.started: dict[int, ReplyStarted] = {}
        self.ended: dict[int, ReplyFinished | ReplyFailed] = {}
        self.texts: dict[int, str] = {}
        self.order: list[int] = []
        dispatch = app.events.dispatch

        def recording(event: EngineEvent) -> None:
            if isinstance(event, ReplyStarted):
                self.started[event.request_id] = event
                self.order.append(event.request_id)
            elif isinstance(event, ReplyFinished | ReplyFailed):
                stream = self.started[event.request_id].stream
                self.texts[event.request_id] = stream.text + stream.drain()
                self.ended[event.request_id] = event
            dispatch(event)

        app.events.dispatch = recording  # type: ignore[method-assign]


def _has(seen: Mapping[int, object], request_ids: list[int]) -> Callable[[], bool]:
    """A predicate: every one of ``request_ids`` is in ``seen``."""
    return lambda: all(r in seen for r in request_ids)


async def _until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Let the app run until ``predicate()``; lighter than `wait_for`, which also waits for
    every widget's queue and repaints on each poll (that doubled this test's time)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        await asyncio.sleep(0.002)


async def _engine_round(app: MergechatApp, replies: _Replies, first: int, count: int) -> list[int]:
    """``count`` prompts back to back through ``app.engine``, with cancels mixed in."""
    engine, ids, i = app.engine, [], first
    while i < first + count:
        pattern = i % 10
        if pattern == 3:
            # Three sent at once, then Escape: the running one stops, the queued ones are dropped.
            batch = [engine.generate(ask(f"Prompt {i + k}"), SETTINGS) for k in range(3)]
            engine.cancel()
            i += 3
        else:
            batch = [engine.generate(ask(f"Prompt {i}"), SETTINGS)]
            if pattern == 7:
                engine.cancel()  # right after Enter
            elif pattern == 9:
                await _until(_has(replies.started, batch[:1]))
                engine.cancel()  # once it streams (or has already ended)
            i += 1
        ids += batch
        await _until(_has(replies.ended, batch))
    return ids


async def test_two_hundred_prompts_through_the_apps_engine_no_leaks(tiny_model_dir: Path) -> None:
    threads_before = set(threading.enumerate())
    app = _app(tiny_model_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        replies = _Replies(app)
        started = time.perf_counter()
        warm = await _engine_round(app, replies, 0, WARM_UP)
        threads_warm = len(threading.enumerate())
        rss_warm = _rss_mb()
        ids = await _engine_round(app, replies, WARM_UP, PROMPTS)
        rss_after = _rss_mb()
        threads_after = len(threading.enumerate())
        elapsed = time.perf_counter() - started
        # The engine thread, or the reader of the engine process (the default).
        engine_thread = next(
            t for t in threading.enumerate() if t.name.startswith("mergechat-engine")
        )
        assert app.chat.phase == "ready"
    engine_thread.join(5)
    assert not engine_thread.is_alive()
    every = warm + ids
    assert not [e for e in replies.ended.values() if isinstance(e, ReplyFailed)]
    assert replies.order == every and sorted(replies.ended) == sorted(every)
    finishes = [replies.ended[i].finish for i in ids]  # type: ignore[union-attr]
    stopped = finishes.count("stopped")
    assert stopped >= PROMPTS // 10 and len(ids) - stopped >= PROMPTS // 2, finishes
    for request_id in every:
        finished = replies.ended[request_id]
        assert isinstance(finished, ReplyFinished)
        assert replies.started[request_id].stream.closed
        assert replies.texts[request_id] == finished.text
    # asyncio_N: the test's event loop's executor thread, closed with the loop after the test.
    leftover = {t for t in set(threading.enumerate()) - threads_before}
    assert not {t for t in leftover if not t.name.startswith("asyncio_")}, leftover
    assert threads_after == threads_warm
    print(
        f"\napp engine: {PROMPTS} prompts after {WARM_UP} warm-up in {elapsed:.1f} s, "
        f"{len(ids) - stopped} answered, {stopped} cancelled; RSS {rss_warm:.1f} -> "
        f"{rss_after:.1f} MiB ({rss_after - rss_warm:+.1f}); threads {threads_warm} -> "
        f"{threads_after}, none left after the app"
    )
    assert rss_after - rss_warm < RSS_MARGIN_MB
