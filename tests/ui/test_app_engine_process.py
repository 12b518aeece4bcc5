"""The app with its default engine, in its own process: a SIGKILL mid-reply, F2 to load again,
and no torch in the app's process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from app_helpers import model_ready, notifications, real_app, wait_for

from mergechat.core.engine.process import ProcessEngine
from mergechat.core.engine.wire import RelayedStream
from mergechat.ui.app import MergechatApp
from mergechat.ui.screens.settings import SettingsScreen
from mergechat.ui.widgets.assistant_message import AssistantMessage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def long_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with a 4096-token context, for replies that take seconds."""
    from fixtures.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-long", context=4096)


def _process_engine(app: MergechatApp) -> ProcessEngine:
    engine = app.engine._engine  # the real engine behind the app's `DeferredEngine`
    # Behind the router of local and served models, when there is one.
    engine = getattr(engine, "_engines", {}).get(False, engine)
    assert isinstance(engine, ProcessEngine)
    return engine


async def test_engine_killed_mid_reply_keeps_the_chat_and_f2_loads_again(
    long_model_dir: Path,
) -> None:
    app = real_app(long_model_dir, dtype="float32", max_new_tokens=3000, temperature=0.0)
    async with app.run_test(size=(100, 30)) as pilot:
        chat = app.chat
        await model_ready(app, pilot)
        engine = _process_engine(app)
        pid = engine.pid
        assert pid is not None

        await pilot.press(*"Tell me a long story", "enter")
        reply = await _streaming_reply(pilot, app)
        os.kill(pid, signal.SIGKILL)

        await wait_for(pilot, lambda: chat.phase == "error", timeout=30)
        await wait_for(pilot, lambda: not reply.streaming)
        assert reply.footer_text.startswith("failed: the engine process stopped")
        assert reply.body.source, "the partial reply stays on screen"
        messages = chat.conversation.messages
        assert messages[0].role == "user" and messages[0].content.startswith("Tell")
        notices = [n.message for n in notifications(app) if n.title == "The engine stopped"]
        assert len(notices) == 1 and "SIGKILL" in notices[0]
        assert "press F2 to load a model again" in notices[0]
        assert app.model_state is None and chat.status.info.model == ""

        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen), timeout=10)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: chat.phase == "ready", timeout=120)
        assert engine.pid not in (None, pid), "a fresh engine process"
        assert app.model_state is not None and app.model_state.path == long_model_dir
        assert reply.body.source, "the failed reply is still shown after the reload"


async def _streaming_reply(pilot: object, app: MergechatApp) -> AssistantMessage:
    """Wait until the reply shows some text; return its widget."""
    chat = app.chat

    def streaming() -> bool:
        replies = list(chat.query(AssistantMessage))
        return bool(replies) and replies[-1].streaming and bool(replies[-1].body.source)

    await wait_for(pilot, streaming, timeout=60)  # type: ignore[arg-type]
    reply = list(chat.query(AssistantMessage))[-1]
    stream = reply._stream
    assert isinstance(stream, RelayedStream), "text arrives from the engine process"
    return reply


def test_the_app_process_never_imports_torch(tiny_model_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, json, sys, time
        from pathlib import Path
        from mergechat.ui.app import MergechatApp
        from mergechat.ui.options import AppOptions

        async def main():
            options = AppOptions(
                model_path=Path({str(tiny_model_dir)!r}),
                device="cpu",
                generation_overrides={{"max_new_tokens": 6, "temperature": 0.0}},
            )
            app = MergechatApp(options)
            async with app.run_test(size=(100, 30)) as pilot:
                chat = app.chat

                async def until(predicate):
                    deadline = time.monotonic() + 120
                    while not predicate():
                        assert time.monotonic() < deadline
                        await pilot.pause(0.02)

                await until(lambda: chat.phase in ("ready", "error"))
                assert chat.phase == "ready"
                await pilot.press(*"Hello", "enter")
                await until(lambda: chat.phase == "ready" and len(chat.conversation.messages) == 2)
                turns = len(chat.conversation.messages)
            heavy = [m for m in ("torch", "transformers") if m in sys.modules]
            print(json.dumps({{"turns": turns, "heavy": heavy}}))

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"turns": 2, "heavy": []}
