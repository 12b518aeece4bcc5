"""The app with the real engine and a tiny real model: load, stream a reply, switch precision."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_helpers import model_ready, real_app, wait_for

from mergechat.core.dtypes import DTYPES
from mergechat.ui.widgets.assistant_message import AssistantMessage


@pytest.mark.slow
async def test_real_engine_loads_streams_and_switches(tiny_model_dir: Path) -> None:
    app = real_app(tiny_model_dir, max_new_tokens=12, temperature=0.0)
    async with app.run_test(size=(100, 30)) as pilot:
        chat = app.chat
        await model_ready(app, pilot)
        state = app.model_state
        assert state is not None and state.name == tiny_model_dir.name
        assert chat.status.info.dtype == state.dtype and state.dtype in DTYPES
        assert chat.status.info.device == "cpu"

        await pilot.press(*"Hello", "enter")
        await wait_for(
            pilot,
            lambda: chat.phase == "ready" and len(chat.conversation.messages) == 2,
            timeout=60,
        )
        reply = chat.query_one(AssistantMessage)
        await wait_for(pilot, lambda: not reply.streaming and "tokens" in reply.footer_text)
        assert reply.body.source == chat.conversation.messages[1].content
        assert reply.footer_text.endswith(f"{state.dtype} · cpu · hit max_new_tokens") or (
            f"{state.dtype} · cpu" in reply.footer_text
        )

        target = "float32" if state.dtype != "float32" else "bfloat16"
        app.switch_precision(target)
        assert chat.phase == "switching"
        await wait_for(pilot, lambda: chat.phase != "switching", timeout=60)
        assert chat.status.info.dtype == target
        assert app.model_state is not None and app.model_state.dtype == target
        assert len(chat.conversation.messages) == 2
