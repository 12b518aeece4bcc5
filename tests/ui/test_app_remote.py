"""The app on a served model: a scripted OpenAI-compatible server, and a real ``transformers
serve``. The status bar says what the server reports, replies stream and stop, the precision menu
explains, a server's escape sequences are painted as text, and a bad URL leaves the app usable."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from app_helpers import MODEL_PATH, frame_bytes, model_ready, notices, wait_for
from textual.pilot import Pilot

from fixtures.fake_engine import FakeEngine
from fixtures.scripted_server import Running, scripted_server
from fixtures.transformers_server import ServedModel
from mergechat.core.api import EventSink, LoadRequest
from mergechat.core.model.target import parse_target
from mergechat.core.remote.routing import RoutingEngine
from mergechat.core.remote.server_info import NOT_REPORTED
from mergechat.ui.app import MergechatApp
from mergechat.ui.options import AppOptions
from mergechat.ui.widgets.assistant_message import AssistantMessage

SIZE = (120, 30)
ESCAPES = "\x1b]52;c;cHduZWQ=\x07\x1b[2J"


@pytest.fixture
def server() -> Iterator[Running]:
    with scripted_server() as running:
        yield running


def _app(url: str, **overrides: object) -> MergechatApp:
    return MergechatApp(
        AppOptions(model_path=parse_target(url).path(), generation_overrides=overrides)
    )


async def _ready(app: MergechatApp, pilot: Pilot[object], timeout: float = 20) -> None:
    await model_ready(app, pilot, timeout)


async def test_status_reply_stop_and_precision_on_a_served_model(server: Running) -> None:
    server.script.extra = {"/info": {"model_dtype": "torch.bfloat16", "model_device_type": "cuda"}}
    server.script.pieces = ["Hi ", ESCAPES, " there"]
    app = _app(server.url)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        info = app.chat.status.info
        assert (info.model, info.dtype) == ("tiny-chat", "bfloat16")
        assert info.device == f"127.0.0.1:{server.port} · cuda"
        engine = app.engine._engine
        assert isinstance(engine, RoutingEngine)
        assert list(engine._engines) == [True]  # the local engine was never started

        await pilot.press(*"Hello", "enter")
        await wait_for(pilot, lambda: len(app.chat.conversation.messages) == 2, timeout=20)
        reply = app.chat.query_one(AssistantMessage)
        await wait_for(pilot, lambda: not reply.streaming and "tokens" in reply.footer_text)
        assert reply.body.source == f"Hi {ESCAPES} there"
        painted = frame_bytes(app)
        assert "\x1b]52;" not in painted and "\x1b[2J" not in painted
        assert "\\u001b]52;c;cHduZWQ=" in painted
        assert "bfloat16 · cuda" in reply.footer_text

        app.action_precision()
        await pilot.pause()
        assert any("fixes the precision" in text for text in notices(app))
        assert app.screen is app.chat  # no menu of precisions the server would not use

        server.script.chat = "slow"
        await pilot.press(*"More", "enter")
        await wait_for(pilot, lambda: app.chat.phase == "generating", timeout=20)
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.chat.phase == "ready", timeout=20)
        assert server.script.client_closed.wait(20)
        assert len(server.script.requests) == 2

        server.script.chat = "stream"
        await pilot.press("ctrl+o")  # continue the stopped reply
        await wait_for(pilot, lambda: len(server.script.requests) == 3, timeout=20)
        await wait_for(pilot, lambda: app.chat.phase == "ready", timeout=20)
        continued = server.script.requests[2]["messages"]
        assert continued[-1]["role"] == "assistant" and continued[-1]["content"].startswith("w0")
        assert app.chat.conversation.messages[-1].content.endswith("Hi " + ESCAPES + " there")

        await pilot.press("ctrl+r")  # regenerate: the same question again
        await wait_for(pilot, lambda: len(server.script.requests) == 4, timeout=20)
        await wait_for(pilot, lambda: app.chat.phase == "ready", timeout=20)
        again = server.script.requests[3]["messages"]
        assert again[-1] == {"role": "user", "content": "More"}
        assert app.chat.conversation.messages[-1].content == f"Hi {ESCAPES} there"


async def test_plain_server_says_precision_is_not_reported(server: Running) -> None:
    app = _app(server.url)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot)
        assert app.chat.status.info.dtype == NOT_REPORTED
        assert NOT_REPORTED in frame_bytes(app)


async def test_unreachable_server_is_a_notice_and_the_app_stays_usable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = _app(f"http://127.0.0.1:{port}/v1")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.phase not in ("starting", "loading"), timeout=20)
        await wait_for(pilot, lambda: any("connection refused" in t for t in notices(app)))
        await pilot.press("f1")  # the help screen opens: the app still answers
        await wait_for(pilot, lambda: app.screen is not app.chat)


async def test_f2_moves_between_a_server_and_a_local_model(server: Running) -> None:
    """A bad URL first, then a local model, then the server, then local again (the router)."""
    locals_made: list[FakeEngine] = []

    def local(sink: EventSink) -> FakeEngine:
        locals_made.append(FakeEngine(sink))
        return locals_made[-1]

    bad = f"http://127.0.0.1:{server.port}/wrong"
    app = MergechatApp(
        AppOptions(model_path=parse_target(bad).path()),
        engine_factory=lambda sink: RoutingEngine(sink, local, start_local=False),
    )
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: any("HTTP 404" in t for t in notices(app)), timeout=20)
        # Only the detector ran locally (the settings screen lists this machine's devices).
        assert all(not engine.loads for engine in locals_made)
        app._load(LoadRequest(MODEL_PATH))
        await _ready(app, pilot)
        assert app.model_state is not None and app.model_state.path == MODEL_PATH
        app._load(LoadRequest(parse_target(server.url).path()))
        await _ready(app, pilot)
        assert app.chat.status.info.model == "tiny-chat"
        await wait_for(pilot, lambda: locals_made[0].shut_down)  # its model is let go
        app._load(LoadRequest(MODEL_PATH))
        await _ready(app, pilot)
        assert len(locals_made) == 2 and app.model_state.path == MODEL_PATH


@pytest.mark.slow
async def test_app_chats_with_transformers_serve(served_tiny_model: ServedModel) -> None:
    app = _app(served_tiny_model.url, max_new_tokens=4, temperature=0.0)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(app, pilot, timeout=60)
        assert app.chat.status.info.model == served_tiny_model.model
        await pilot.press(*"Hello", "enter")
        await wait_for(pilot, lambda: len(app.chat.conversation.messages) == 2, timeout=120)
        reply = app.chat.query_one(AssistantMessage)
        await wait_for(pilot, lambda: not reply.streaming, timeout=120)
        assert "tokens" in reply.footer_text, reply.footer_text
