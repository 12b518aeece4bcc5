"""App flows driven by engine events: status bar, load progress, precision switch, errors."""

from __future__ import annotations

import threading

from app_helpers import (
    MODEL_PATH,
    SIZE,
    FakeApp,
    notices,
    notifications,
    ready,
    ready_app,
    wait_for,
)

from fixtures.fake_engine import Script
from mergechat.core.api import LoadProgress, MeasuredSpeed, ModelLoaded, ModelState
from mergechat.ui.messages import EngineEventMessage
from mergechat.ui.screens.precision import PrecisionScreen
from mergechat.ui.verdicts import ShownVerdict
from mergechat.ui.widgets.assistant_message import AssistantMessage
from mergechat.ui.widgets.status_bar import StatusBar


def severities(fake: FakeApp) -> list[str]:
    return [n.severity for n in notifications(fake.app)]


async def test_status_bar_follows_every_event() -> None:
    gate = threading.Event()
    # A 3 s reply: the "generating" window stays wide enough to observe on a loaded machine.
    fake = FakeApp(Script(load_gate=gate, reply=["a"] * 30, token_delay=0.1))
    async with fake.app.run_test(size=SIZE) as pilot:
        chat = fake.app.chat
        await wait_for(pilot, lambda: chat.load_progress.active and chat.status.info.progress > 0)
        # loading x%, with the stage and detail beside the bar
        assert chat.status.info.phase_text() == "loading 10%"
        assert chat.load_progress.stage_text == "inspecting: inspecting fake-merge"
        gate.set()
        await ready(fake, pilot)
        info = chat.status.info
        assert (info.model, info.device, info.dtype, info.merge_method) == (
            "fake-merge",
            "cpu",
            "bfloat16",
            "dare_ties",
        )
        assert info.context_max == 2048 and not chat.load_progress.active
        line = str(StatusBar.render_content(info))
        assert line == " fake-merge │ cpu │ bfloat16 │  ready  │ ctx 0/2048 │ merge: dare_ties"
        # generating, with live tok/s and context use
        await pilot.press("h", "i", "enter")
        await wait_for(
            pilot, lambda: chat.phase == "generating" and chat.status.info.tokens_per_s is not None
        )
        assert chat.status.info.context_used is not None and chat.status.info.context_used > 1
        await wait_for(pilot, lambda: chat.phase == "ready")
        assert chat.status.info.tokens_per_s == 25.0
        assert chat.status.info.context_used == 31
        # switching, then the precision the engine reports
        fake.script.switch_delay = 0.3
        fake.app.switch_precision("float32")
        assert chat.phase == "switching"
        await wait_for(pilot, lambda: chat.phase == "ready")
        assert chat.status.info.dtype == "float32"


async def test_the_status_dtype_is_the_models_not_the_requests() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        state = ModelState(MODEL_PATH, "other", "cuda:0+cpu offload", "float16", "bfloat16", 4096)
        fake.app.post_message(EngineEventMessage(ModelLoaded(state)))
        await wait_for(pilot, lambda: fake.app.chat.status.info.dtype == "float16")
        info = fake.app.chat.status.info
        assert (info.model, info.device, info.context_max) == ("other", "cuda:0+cpu offload", 4096)
        assert info.merge_method is None


async def test_precision_menu_switches_and_reports_fidelity() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await wait_for(pilot, lambda: fake.app.capabilities is not None)
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: isinstance(fake.app.screen, PrecisionScreen))
        await pilot.press("1")
        await wait_for(pilot, lambda: fake.app.chat.status.info.dtype == "float32")
        assert fake.engine is not None and fake.engine.switches == ["float32"]
        assert fake.app.model_state is not None and fake.app.model_state.dtype == "float32"
        assert any("97.5% top-1 agreement" in n for n in notices(fake.app))
        # F3 is the alias; the verdicts come from the detector's probes
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(fake.app.screen, PrecisionScreen))
        screen = fake.app.screen
        assert isinstance(screen, PrecisionScreen)
        assert screen._verdicts == {
            "float32": ShownVerdict("ok", "ok"),
            "bfloat16": ShownVerdict("ok", "ok"),
            "float16": ShownVerdict("slow", "slow 3.5x per turn"),
        }
        await pilot.press("escape")
        await wait_for(pilot, lambda: fake.app.screen is fake.app.chat)
        assert fake.engine.switches == ["float32"]


async def test_conversation_stays_across_a_switch() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await pilot.press("h", "i", "enter")
        await wait_for(pilot, lambda: len(fake.app.chat.conversation.messages) == 2)
        await ready(fake, pilot)
        fake.app.switch_precision("float16")
        await wait_for(pilot, lambda: fake.app.chat.status.info.dtype == "float16")
        assert len(fake.app.chat.conversation.messages) == 2
        assert len(fake.app.chat.query(AssistantMessage)) == 1


async def test_failed_switch_keeps_the_precision_and_shows_the_error() -> None:
    fake = FakeApp(Script(switch_error="float16 overflowed to inf"))
    async with ready_app(fake) as pilot:
        fake.app.switch_precision("float16")
        await wait_for(pilot, lambda: any("overflowed" in n for n in notices(fake.app)))
        await ready(fake, pilot)
        assert fake.app.chat.status.info.dtype == "bfloat16"
        assert "error" in severities(fake)


async def test_switch_to_the_current_precision_does_nothing() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        fake.app.switch_precision("bfloat16")
        await pilot.pause()
        assert fake.engine is not None and fake.engine.switches == []
        assert any("already bfloat16" in n for n in notices(fake.app))


async def test_load_failure_is_one_error_notification_and_the_app_stays_usable() -> None:
    fake = FakeApp(Script(load_error="'addmm_impl_cpu_' not implemented for 'Half'"))
    async with fake.app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: fake.app.chat.phase == "error")
        assert sum("addmm_impl_cpu_" in n for n in notices(fake.app)) == 1
        assert not fake.app.chat.load_progress.active
        await pilot.press(*"hello", "enter")
        assert fake.app.chat.prompt.text == "hello"
        assert any("F2" in n for n in notices(fake.app))
        await pilot.press("f1")
        await wait_for(pilot, lambda: fake.app.screen is not fake.app.chat)
        await pilot.press("escape")
        await wait_for(pilot, lambda: fake.app.screen is fake.app.chat)


async def test_reply_failure_marks_the_reply_and_the_next_one_works() -> None:
    fake = FakeApp(Script(reply_error="CUDA out of memory"))
    async with ready_app(fake) as pilot:
        await pilot.press("h", "i", "enter")
        await wait_for(pilot, lambda: any("out of memory" in n for n in notices(fake.app)))
        reply = fake.app.chat.query_one(AssistantMessage)
        await wait_for(pilot, lambda: reply.footer_text == "failed: CUDA out of memory")
        assert reply.body.source == "Hello! I am"
        assert [m.role for m in fake.app.chat.conversation.messages] == ["user"]
        fake.script.reply_error = None
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: len(fake.app.chat.conversation.messages) == 2)
        assert len(fake.app.chat.query(AssistantMessage)) == 1


async def test_engine_that_cannot_start_is_reported() -> None:
    def broken(_sink: object) -> object:
        raise ImportError("No module named 'torch'")

    from mergechat.ui.app import MergechatApp
    from mergechat.ui.options import AppOptions

    app = MergechatApp(AppOptions(model_path=MODEL_PATH), engine_factory=broken)  # type: ignore[arg-type]
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.phase == "error")
        assert any("No module named 'torch'" in n.message for n in notifications(app))
        assert app.is_running


async def test_progress_events_update_the_bar() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        fake.app.post_message(EngineEventMessage(LoadProgress("reading", 0.42, "shard 2/5")))
        await wait_for(pilot, lambda: fake.app.chat.phase == "loading")
        assert fake.app.chat.status.info.phase_text() == "loading 42%"
        assert fake.app.chat.load_progress.stage_text == "reading: shard 2/5"


async def test_a_clearly_faster_precision_is_pointed_out_once_with_the_real_key() -> None:
    speed = MeasuredSpeed(40.0, 9.0, 45.0, 10.0, "float32", 2.3, say_faster=True)
    fake = FakeApp(Script(speed=speed))
    async with ready_app(fake):
        said = [n for n in notices(fake.app) if "would make chat turns" in n]
        assert said == [
            "float32 would make chat turns about 2.3x faster on this machine (from this "
            "model's measured speed); press ctrl+t to switch precision"
        ]
    quiet = FakeApp(Script(speed=MeasuredSpeed(40.0, 9.0, 45.0, 10.0, "float32", 2.3)))
    async with ready_app(quiet):
        assert not [n for n in notices(quiet.app) if "would make chat turns" in n]  # said before
