"""Engine errors in the app: shown verbatim (never as markup), CLI-style hint, model restored."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from app_helpers import MODEL_PATH, FakeApp, notices, notifications, wait_for
from textual.pilot import Pilot
from textual.widgets import Select, Static

from fixtures.fake_engine import FakeEngine, Script
from mergechat.core.api import (
    EngineNotice,
    EventSink,
    LoadFailed,
    LoadRequest,
    ModelLoaded,
)
from mergechat.core.settings.config import Config
from mergechat.ui.app import MergechatApp
from mergechat.ui.engine_events import error_text
from mergechat.ui.messages import EngineEventMessage
from mergechat.ui.options import AppOptions
from mergechat.ui.screens.settings import SettingsScreen
from mergechat.ui.start_config import effective_config
from mergechat.ui.widgets.status_bar import StatusBar, StatusInfo

SIZE = (100, 30)
#: Text that Textual markup would eat ("[v2]") or fail on ("[/x]": an unmatched closing tag).
BRACKETS = "cannot read /models/merge[v2]/a[/x]: shape [bold] mismatch"


async def ready(app: MergechatApp, pilot: Pilot[Any]) -> None:
    await wait_for(pilot, lambda: app.chat.phase == "ready")


def test_error_text_puts_the_hint_on_its_own_line_like_the_cli() -> None:
    assert error_text("no tokenizer", "copy it") == "no tokenizer\nhint: copy it"
    assert error_text("no tokenizer", None) == "no tokenizer"


def test_an_unknown_dtype_option_is_reported_not_silently_replaced() -> None:
    config, problems = effective_config(Config(), AppOptions(dtype="float8"))
    assert config.model.dtype == "auto"
    assert problems == [
        "unknown dtype 'float8'; choose auto, float32, bfloat16, float16; using auto"
    ]
    config, problems = effective_config(Config(), AppOptions(dtype="BF16"))
    assert (config.model.dtype, problems) == ("bfloat16", [])


async def test_a_load_error_with_brackets_is_shown_verbatim_and_the_app_survives() -> None:
    fake = FakeApp(Script(load_error=BRACKETS))
    # Notifications on: their toasts render the text (markup would raise MarkupError there).
    async with fake.app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_for(pilot, lambda: fake.app.chat.phase == "error")
        await pilot.pause(0.2)
        assert notices(fake.app) == [f"{BRACKETS}\nhint: a hint"]
        assert fake.app.is_running


async def test_reply_switch_notice_and_warning_texts_are_not_markup() -> None:
    fake = FakeApp(Script(reply_error=BRACKETS, switch_error=BRACKETS))
    app = fake.app
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(app, pilot)
        await pilot.press("h", "i", "enter")
        await wait_for(pilot, lambda: any(BRACKETS in m for m in notices(app)))
        await ready(app, pilot)
        app.switch_precision("float32")
        await wait_for(pilot, lambda: sum(BRACKETS in m for m in notices(app)) == 2)
        app.post_message(EngineEventMessage(EngineNotice(f"notice {BRACKETS}", "error")))
        assert app.model_state is not None
        state = app.model_state
        app.post_message(EngineEventMessage(ModelLoaded(state, (f"warning {BRACKETS}",))))
        await wait_for(pilot, lambda: sum(BRACKETS in m for m in notices(app)) == 4)
        await pilot.pause(0.2)
        assert f"notice {BRACKETS}" in notices(app)
        assert f"warning {BRACKETS}" in notices(app)
        assert app.is_running


class ReleasingEngine(FakeEngine):
    """A fake whose loads of a folder named ``broken`` fail after releasing the model (OOM)."""

    def _load(self, request: LoadRequest) -> None:
        if request.path.name == "broken" or self.script.load_error == "always":
            self.state = None
            self._emit(LoadFailed("out of memory on cpu", "choose a smaller dtype", None))
            return
        super()._load(request)


def releasing_app() -> tuple[MergechatApp, list[ReleasingEngine]]:
    engines: list[ReleasingEngine] = []

    def factory(sink: EventSink) -> ReleasingEngine:
        engines.append(ReleasingEngine(sink, Script()))
        return engines[0]

    return MergechatApp(AppOptions(model_path=MODEL_PATH), engine_factory=factory), engines


async def test_a_failed_load_that_released_the_model_loads_it_again() -> None:
    app, engines = releasing_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        app.switch_precision("float32")
        await wait_for(pilot, lambda: app.chat.status.info.dtype == "float32")
        app._load(LoadRequest(Path("/models/broken"), device="cpu"))
        await wait_for(pilot, lambda: any("out of memory" in m for m in notices(app)))
        failure = next(m for m in notices(app) if "out of memory" in m)
        assert failure == (
            "out of memory on cpu\nhint: choose a smaller dtype\nLoading fake-merge again."
        )
        await ready(app, pilot)
        loads = engines[0].loads
        # The previous model, in the precision it had when the other load was tried.
        assert [(r.path, r.dtype) for r in loads] == [
            (MODEL_PATH, "auto"),
            (Path("/models/broken"), "auto"),
            (MODEL_PATH, "float32"),
        ]
        assert app.model_state is not None and app.model_state.name == "fake-merge"
        await pilot.press("h", "i", "enter")
        await wait_for(pilot, lambda: len(app.chat.conversation.messages) == 2)


async def test_a_restore_that_fails_too_is_not_retried() -> None:
    app, engines = releasing_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        engines[0].script.load_error = "always"
        app._load(LoadRequest(Path("/models/broken")))
        await wait_for(pilot, lambda: len(engines[0].loads) == 3)
        await wait_for(pilot, lambda: app.chat.phase == "error")
        await pilot.pause(0.3)
        assert len(engines[0].loads) == 3
        assert app.model_state is None and app.chat.status.info.model == ""
        assert sum("out of memory" in m for m in notices(app)) == 2
        assert app.is_running


async def test_settings_opened_during_a_load_already_knows_the_device_is_missing() -> None:
    gate = threading.Event()
    fake = FakeApp(Script(load_gate=gate), AppOptions(model_path=MODEL_PATH, device="mps"))
    app = fake.app
    async with app.run_test(size=SIZE) as pilot:
        # The devices are asked for before the load, so they are known while it runs.
        await wait_for(pilot, lambda: app.capabilities is not None and app.chat.phase == "loading")
        engine = fake.engine
        assert engine is not None and engine.detections[0] == (None, "auto")
        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen))
        screen = app.screen
        assert isinstance(screen, SettingsScreen)
        await wait_for(pilot, lambda: screen.query_one("#device", Select).value == "auto")
        assert any("device mps is not on this machine" in m for m in notices(app))
        # The screen asks on a device that exists, never on the missing one (the real engine
        # would answer that with a second notice of the same error, and no verdicts).
        await wait_for(pilot, lambda: len(engine.detections) == 2)
        assert [device for _, device in engine.detections] == ["auto", "auto"]
        gate.set()
        await pilot.press("escape")
        await ready(app, pilot)


async def test_settings_on_a_broken_folder_shows_why_and_asks_the_detector_without_it(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    fake = FakeApp(Script(load_error="model folder is empty"), AppOptions(model_path=empty))
    app = fake.app
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.phase == "error")
        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen))
        screen = app.screen
        assert isinstance(screen, SettingsScreen)
        info = screen.query_one("#model-info", Static)
        await wait_for(pilot, lambda: "model folder is empty" in str(info.render()))
        verdicts = screen.query_one("#verdicts", Static)
        await wait_for(pilot, lambda: verdicts.border_title == "Detector")  # not "measuring…"
        assert fake.engine is not None
        assert all(path is None for path, _ in fake.engine.detections)
        assert sum(n.severity == "error" for n in notifications(app)) == 1


def test_the_status_bar_marks_a_model_without_chat_template() -> None:
    info = StatusInfo("ready", model="base", device="cpu", dtype="float32")
    assert "fallback" not in str(StatusBar.render_content(info))
    marked = str(StatusBar.render_content(replace(info, fallback_template=True)))
    assert marked.endswith("│ no chat template: ChatML fallback")
