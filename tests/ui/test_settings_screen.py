"""The settings screen in a host app: verdicts, blocks, confirmations, validation, apply."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from app_helpers import notifications, wait_for
from screen_helpers import (
    CUDA_NO_FIT,
    REASON,
    UNSUPPORTED_HALF,
    HostApp,
    detect_engine,
    make_event,
    make_info,
)
from textual.pilot import Pilot
from textual.widgets import Button, Input, Select, Static, TextArea

from fixtures.fake_engine import DetectAnswer
from mergechat.core.api import ModelState
from mergechat.core.detect.capabilities import Recommendation
from mergechat.core.dtypes import DType
from mergechat.core.settings.config import Config, ModelConfig, load_config
from mergechat.core.settings.generation import GenerationSettings
from mergechat.ui.path_completion import complete_path
from mergechat.ui.screens import settings_logic as logic
from mergechat.ui.screens.confirm import ConfirmScreen
from mergechat.ui.screens.settings import SettingsResult, SettingsScreen

SIZE = (100, 50)


class Harness:
    """A host app around one `SettingsScreen`, its fake engine and its config file."""

    def __init__(
        self,
        model_dir: Path,
        *,
        config: Config | None = None,
        state: ModelState | None = None,
        answer: DetectAnswer | None = None,
        inspector: Any = make_info,
        config_path: Path | None = None,
    ) -> None:
        self.config = config or Config(model=ModelConfig(path=str(model_dir)))
        self.engine, self.route = detect_engine(answer)
        self.config_path = config_path or model_dir.parent / "config.toml"
        self.inspector = inspector
        self.state = state
        self.app = HostApp(self._make)

    def _make(self) -> SettingsScreen:
        screen = SettingsScreen(
            self.config,
            self.engine,  # type: ignore[arg-type]
            self.state,
            inspector=self.inspector,
            config_path=self.config_path,
        )
        self.route.target = screen
        return screen

    @property
    def screen(self) -> SettingsScreen:
        screen = self.route.target
        assert isinstance(screen, SettingsScreen)
        return screen

    def text(self, selector: str) -> str:
        return str(self.screen.query_one(selector, Static).render())

    async def ready(self, pilot: Pilot[Any]) -> None:
        """Wait for the first detector answer and the model inspection."""
        await wait_for(pilot, lambda: self.screen._caps is not None)
        if self.inspector is not None and self.config.model.path:
            await wait_for(pilot, lambda: self.screen._info is not None)
        await pilot.pause()

    async def choose(self, pilot: Pilot[Any], select_id: str, value: str) -> None:
        self.screen.query_one(f"#{select_id}", Select).value = value
        await pilot.pause()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-merge"
    folder.mkdir()
    return folder


def loaded_state(
    path: Path, dtype: DType = "bfloat16", device: str = "cpu", device_id: str | None = None
) -> ModelState:
    return ModelState(
        path,
        path.name,
        device,
        dtype,
        "bfloat16",
        2048,
        merge_method="dare_ties",
        device_id=device_id or device,
    )


async def test_shows_every_verdict_the_recommendation_and_the_model_dtypes(model_dir: Path) -> None:
    h = Harness(model_dir)
    async with h.app.run_test(size=SIZE) as pilot:
        await h.ready(pilot)
        assert h.engine.detections[0] == (model_dir, "auto")
        verdicts = h.text("#verdicts")
        for text in ("ok", UNSUPPORTED_HALF, CUDA_NO_FIT, "slow 4.2x"):
            assert text in verdicts
        assert len(verdicts.splitlines()) == 6
        # auto/auto resolves to the recommendation, which is marked.
        assert "▶ cpu      bfloat16  ok  ★ recommended" in verdicts
        assert REASON in h.text("#recommendation")
        info = h.text("#model-info")
        assert "declared bfloat16" in info and "merge dare_ties" in info
        assert "merge dtype bfloat16" in info
        device = h.screen.query_one("#device", Select)
        values = [value for _, value in device._options]
        assert values == ["auto", "cpu", "cuda:0"]


async def test_without_an_assessment_the_bare_probes_are_shown(model_dir: Path) -> None:
    h = Harness(model_dir, answer=lambda _p, _d: make_event(with_assessment=False))
    async with h.app.run_test(size=SIZE) as pilot:
        await h.ready(pilot)
        verdicts = h.text("#verdicts")
        assert UNSUPPORTED_HALF in verdicts and "slow 4.2x" in verdicts
        assert h.text("#recommendation") == ""


@pytest.mark.parametrize(
    ("device", "dtype", "shown"),
    [("cpu", "float16", UNSUPPORTED_HALF), ("cuda:0", "float32", CUDA_NO_FIT)],
)
async def test_an_unusable_choice_cannot_be_applied(
    model_dir: Path, device: str, dtype: str, shown: str
) -> None:
    h = Harness(model_dir)
    async with h.app.run_test(size=SIZE) as pilot:
        await h.ready(pilot)
        await h.choose(pilot, "device", device)
        await h.choose(pilot, "dtype", dtype)
        assert h.screen.query_one("#apply", Button).disabled
        status = h.text("#choice-status")
        assert status.startswith("✗") and shown in status
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert h.app.results == [] and h.app.screen is h.screen
        assert not h.config_path.exists()
        # Another precision makes it applicable again.
        await h.choose(pilot, "dtype", "bfloat16")
        assert not h.screen.query_one("#apply", Button).disabled


async def test_a_slow_choice_asks_first_and_going_back_keeps_the_screen(model_dir: Path) -> None:
    h = Harness(model_dir)
    async with h.app.run_test(size=SIZE) as pilot:
        await h.ready(pilot)
        await h.choose(pilot, "device", "cuda:0")
        await h.choose(pilot, "dtype", "float16")
        assert "slow 4.2x" in h.text("#choice-status")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(h.app.screen, ConfirmScreen))
        reasons = " ".join(str(s.render()) for s in h.app.screen.query(".confirm-reason"))
        assert "slow 4.2x" in reasons and "overflow" in reasons  # bf16 merge -> fp16 is risky
        await pilot.press("enter")  # the focused button is "Go back"
        await wait_for(pilot, lambda: h.app.screen is h.screen)
        assert h.app.results == []
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(h.app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: h.app.results != [])
    result = h.app.results[0]
    assert isinstance(result, SettingsResult)
    assert (result.config.model.device, result.config.model.dtype) == ("cuda:0", "float16")
    assert result.reload and result.switch_dtype is None  # nothing was loaded yet
    # The recent models are state, not settings: the config file does not hold them.
    assert load_config(h.config_path) == (replace(result.config, recent_models=[]), [])


async def test_float16_for_a_bfloat16_merge_is_risky_even_where_it_is_fast(
    model_dir: Path,
) -> None:
    texts = {("cpu", "float32"): "ok", ("cpu", "bfloat16"): "ok", ("cpu", "float16"): "ok"}
    h = Harness(model_dir, answer=lambda _p, _d: make_event(texts))
    async with h.app.run_test(size=SIZE) as pilot:
        await h.ready(pilot)
        await h.choose(pilot, "dtype", "float16")
        assert "65504" in h.text("#choice-status")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(h.app.screen, ConfirmScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: h.app.screen is h.screen)
        assert h.app.results == []


async def test_bad_numbers_are_shown_beside_their_field_and_nothing_is_lost(
    model_dir: Path,
) -> None:
    h = Harness(model_dir)
    async with h.app.run_test(size=SIZE) as pilot:
        await h.ready(pilot)
        h.screen.query_one("#gen-temperature", Input).value = "hot"
        h.screen.query_one("#gen-top_p", Input).value = "1.5"
        h.screen.query_one("#gen-max_new_tokens", Input).value = "0"
        h.screen.query_one("#gen-seed", Input).value = "42"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert h.app.results == []
        assert h.text("#gen-temperature-error") == "must be a number >= 0"
        assert h.text("#gen-top_p-error") == "must be a number > 0 and <= 1"
        assert h.text("#gen-max_new_tokens-error") == "must be an integer >= 1"
        assert "must" not in h.text("#gen-seed-error")
        assert h.screen.query_one("#gen-temperature", Input).value == "hot"
        assert h.screen.query_one("#gen-seed", Input).value == "42"
        assert h.app.focused is h.screen.query_one("#gen-temperature", Input)
        assert not h.config_path.exists()


async def test_a_missing_model_path_is_reported_on_apply(model_dir: Path) -> None:
    h = Harness(model_dir)
    async with h.app.run_test(size=SIZE) as pilot:
        await h.ready(pilot)
        h.screen.query_one("#model-path", Input).value = str(model_dir / "nope")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "no such file or folder" in h.text("#model-path-error")
        assert h.app.results == []


async def test_a_server_url_is_not_read_as_a_folder_and_applies(model_dir: Path) -> None:
    h = Harness(model_dir)
    async with h.app.run_test(size=SIZE) as pilot:
        await h.ready(pilot)
        url = "http://127.0.0.1:8000/v1"
        h.screen.query_one("#model-path", Input).value = url
        await wait_for(pilot, lambda: "a model on a server" in h.text("#model-info"))
        assert "no such file" not in h.text("#model-path-error")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: h.app.results != [])
    result = h.app.results[0]
    assert result.reload and result.config.model.path == url


async def test_generation_changes_are_saved_without_reloading(model_dir: Path) -> None:
    state = loaded_state(model_dir)
    h = Harness(model_dir, state=state)
    async with h.app.run_test(size=SIZE) as pilot:
        await h.ready(pilot)
        h.screen.query_one("#gen-temperature", Input).value = "0.5"
        h.screen.query_one("#gen-top_k", Input).value = "40"
        h.screen.query_one("#system-prompt", TextArea).text = 'Be "brief".\nNo \\ tricks.'
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: h.app.results != [])
    result = h.app.results[0]
    assert result == SettingsResult(result.config, reload=False, switch_dtype=None)
    assert result.config.generation == GenerationSettings(
        temperature=0.5, top_k=40, system_prompt='Be "brief".\nNo \\ tricks.'
    )
    assert result.config.recent_models == [str(model_dir)]
    saved, problems = load_config(h.config_path)
    assert (saved, problems) == (replace(result.config, recent_models=[]), [])
    assert os.stat(h.config_path).st_mode & 0o777 == 0o600


async def test_only_a_new_dtype_on_a_loaded_model_becomes_a_switch(model_dir: Path) -> None:
    h = Harness(model_dir, state=loaded_state(model_dir, "bfloat16"))
    async with h.app.run_test(size=SIZE) as pilot:
        await h.ready(pilot)
        await h.choose(pilot, "dtype", "float32")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: h.app.results != [])
    assert h.app.results[0].switch_dtype == "float32"
    assert not h.app.results[0].reload


async def test_a_new_path_reloads_and_is_detected_once_typing_stops(
    model_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-model"
    other.mkdir()
    h = Harness(model_dir, state=loaded_state(model_dir))
    async with h.app.run_test(size=SIZE) as pilot:
        await h.ready(pilot)
        path_input = h.screen.query_one("#model-path", Input)
        path_input.value = str(tmp_path) + "/"
        path_input.focus()
        path_input.cursor_position = len(path_input.value)
        await pilot.press(*"other-model")
        await wait_for(pilot, lambda: len(h.engine.detections) == 2)
        await pilot.pause(0.5)
        assert h.engine.detections == [(model_dir, "auto"), (other, "auto")]
        await wait_for(pilot, lambda: "other-model" in h.text("#model-info"))
        await pilot.press("enter")  # Enter in a field applies
        await wait_for(pilot, lambda: h.app.results != [])
    result = h.app.results[0]
    assert result.reload and result.config.model.path == str(other)
    assert result.config.recent_models[0] == str(other)


async def test_the_recent_list_fills_the_path(model_dir: Path, tmp_path: Path) -> None:
    old = tmp_path / "old-model"
    old.mkdir()
    config = Config(model=ModelConfig(path=""), recent_models=[str(old), str(model_dir)])
    h = Harness(model_dir, config=config)
    async with h.app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: h.screen._caps is not None)
        assert h.engine.detections[0] == (None, "auto")
        assert "no model chosen" in h.text("#model-info")
        await h.choose(pilot, "recent", str(old))
        assert h.screen.query_one("#model-path", Input).value == str(old)
        await wait_for(pilot, lambda: h.engine.detections[-1] == (old, "auto"))


async def test_escape_cancels_and_saves_nothing(model_dir: Path) -> None:
    h = Harness(model_dir)
    async with h.app.run_test(size=SIZE) as pilot:
        await h.ready(pilot)
        h.screen.query_one("#gen-temperature", Input).value = "0.1"
        await pilot.press("escape")
        await wait_for(pilot, lambda: h.app.results != [])
    assert h.app.results == [None]
    assert not h.config_path.exists()


async def test_keyboard_only_tab_order_and_select(model_dir: Path) -> None:
    h = Harness(model_dir, state=loaded_state(model_dir))
    async with h.app.run_test(size=SIZE) as pilot:
        await h.ready(pilot)
        assert h.app.focused is h.screen.query_one("#model-path", Input)
        order = []
        for _ in range(13):
            await pilot.press("tab")
            order.append(h.app.focused.id if h.app.focused else None)
        assert order == [
            "recent",
            "device",
            "dtype",
            "trust",
            "gen-temperature",
            "gen-top_p",
            "gen-top_k",
            "gen-max_new_tokens",
            "gen-repetition_penalty",
            "gen-seed",
            "system-prompt",
            "apply",
            "cancel",
        ]
        # Choose float32 with the keyboard: focus the dtype select, open it, move, pick.
        for _ in range(10):
            await pilot.press("shift+tab")
        assert h.app.focused is h.screen.query_one("#dtype", Select)
        await pilot.press("enter", "down", "enter")
        await pilot.pause()
        assert h.screen.query_one("#dtype", Select).value == "float32"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: h.app.results != [])
    assert h.app.results[0].switch_dtype == "float32"


async def test_a_device_missing_here_falls_back_to_auto(model_dir: Path) -> None:
    config = Config(model=ModelConfig(path=str(model_dir), device="mps"))
    h = Harness(model_dir, config=config)
    async with h.app.run_test(size=SIZE) as pilot:
        await h.ready(pilot)
        await pilot.pause()
        assert h.screen.query_one("#device", Select).value == "auto"
        await wait_for(pilot, lambda: h.engine.detections[-1] == (model_dir, "auto"))
        assert h.engine.detections[0] == (model_dir, "mps")


async def test_a_config_that_cannot_be_saved_still_applies(model_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    h = Harness(model_dir, config_path=blocker / "config.toml")
    async with h.app.run_test(size=SIZE) as pilot:
        await h.ready(pilot)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: h.app.results != [])
        notes = [n.message for n in notifications(h.app)]
        assert any("cannot save settings" in n for n in notes)
    assert isinstance(h.app.results[0], SettingsResult)


async def test_an_unreadable_model_shows_the_inspector_error(model_dir: Path) -> None:
    from mergechat.core.errors import ModelFolderError

    def broken(path: Path) -> Any:
        raise ModelFolderError(f"not a model folder: no config.json in {path}")

    h = Harness(model_dir, inspector=broken)
    async with h.app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "no config.json" in h.text("#model-info"))


@pytest.mark.slow
async def test_the_real_inspector_reads_a_real_merge(tiny_merge_dir: Path) -> None:
    h = Harness(tiny_merge_dir, inspector=None)
    async with h.app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "merge" in h.text("#model-info"), timeout=10)
        info = h.text("#model-info")
    assert "dare_ties" in info and "bfloat16" in info


def test_complete_path_extends_to_the_first_match(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "merged-a").mkdir()
    (tmp_path / "models" / "notes.txt").write_text("")
    (tmp_path / "models" / ".hidden").mkdir()
    base = str(tmp_path / "models")
    assert complete_path(base) == base + "/"
    assert complete_path(base + "/m") == base + "/merged-a/"
    assert complete_path(base + "/n") == base + "/notes.txt"
    assert complete_path(base + "/") == base + "/merged-a/"  # hidden entries need a "."
    assert complete_path(base + "/.h") == base + "/.hidden/"
    assert complete_path(base + "/zzz") is None
    assert complete_path("") is None


def test_settings_screen_snapshot(snap_compare: Any) -> None:
    engine, route = detect_engine()
    config = Config(
        model=ModelConfig(path="/models/tiny-merge", dtype="bfloat16"),
        generation=GenerationSettings(temperature=0.7, max_new_tokens=256),
        recent_models=["/models/tiny-merge"],
    )

    def make() -> SettingsScreen:
        screen = SettingsScreen(
            config, engine, None, inspector=lambda p: make_info(p), config_path=Path("/dev/null/x")
        )
        route.target = screen
        return screen

    async def settle(pilot: Pilot[Any]) -> None:
        await wait_for(pilot, lambda: route.target._info is not None)
        await pilot.pause()

    assert snap_compare(HostApp(make), terminal_size=(100, 50), run_before=settle)


# -- the screen's decisions, without widgets ----------------------------------------------------
def _cfg(
    path: str = "/m/a", device: str = "auto", dtype: str = "auto", trust: bool = False
) -> Config:
    return Config(model=ModelConfig(path, device, dtype, trust))


REC = Recommendation("cpu", "bfloat16", None, REASON)


@pytest.mark.parametrize(
    ("old", "new", "state_device", "expected"),
    [
        (_cfg(), _cfg(path=""), "cpu", (False, None)),  # no model chosen: nothing to load
        (_cfg(), _cfg(path="/m/b"), "cpu", (True, None)),  # another model
        (_cfg(), _cfg(trust=True), "cpu", (True, None)),
        (_cfg(), _cfg(device="cuda:0"), "cpu", (True, None)),
        (_cfg(), _cfg(device="cpu"), "cpu", (False, None)),  # already there: no reload
        (_cfg(device="cpu"), _cfg(device="cuda"), "cuda:0+cpu offload", (False, None)),
        (_cfg(), _cfg(dtype="float32"), "cpu", (False, "float32")),
        (_cfg(), _cfg(dtype="bfloat16"), "cpu", (False, None)),  # already bfloat16
        (_cfg(dtype="float32"), _cfg(dtype="auto"), "cpu", (False, None)),  # auto = rec = loaded
        (_cfg(), _cfg(), "cpu", (False, None)),  # the saved dtype is not forced back on
    ],
)
def test_decide_reload(
    old: Config, new: Config, state_device: str, expected: tuple[bool, Any]
) -> None:
    # The device travels as data: the label is never parsed back.
    device_id = {"cuda:0+cpu offload": "cuda:0"}.get(state_device, state_device)
    state = loaded_state(Path("/m/a"), "bfloat16", state_device, device_id)
    assert logic.decide_reload(old, new, state, REC) == expected


def test_decide_reload_edge_cases() -> None:
    assert logic.decide_reload(_cfg(), _cfg(), None, REC) == (True, None)  # nothing loaded yet
    state = loaded_state(Path("/m/a"), "float16")
    assert logic.decide_reload(_cfg(dtype="float32"), _cfg(), state, REC) == (False, "bfloat16")
    assert logic.decide_reload(_cfg(dtype="float32"), _cfg(), state, None) == (True, None)


def test_resolve_choice_and_device_ids() -> None:
    event = make_event()
    assert logic.resolve_choice("auto", "auto", event) == ("cpu", "bfloat16")
    assert logic.resolve_choice("cuda", "float16", event) == ("cuda:0", "float16")
    assert logic.resolve_choice("cuda:0", "auto", event) == ("cuda:0", None)  # engine picks
    assert logic.resolve_choice("auto", "float32", None) == (None, "float32")
    assert logic.device_id_for("mps", ["cpu", "cuda:0"]) is None
    assert logic.device_id_for("cuda:1", ["cpu", "cuda:0"]) is None


def test_confirmation_reasons() -> None:
    slow = logic.VerdictRow("cuda:0", "float16", "slow", "slow 4.2x")
    ok32 = logic.VerdictRow("cpu", "float32", "ok", "ok")
    assert logic.confirmation_reasons(ok32, "float32", "bfloat16") == []
    assert logic.confirmation_reasons(ok32, "auto", None) == []
    reasons = logic.confirmation_reasons(slow, "float16", "float32")
    assert len(reasons) == 2 and "slow 4.2x" in reasons[0] and "65504" in reasons[1]
    assert logic.confirmation_reasons(slow, "float16", "float16") == [reasons[0]]


async def test_closing_while_the_model_is_read_is_harmless(model_dir: Path) -> None:
    import threading

    release = threading.Event()

    def slow(path: Path) -> Any:
        release.wait(5)
        return make_info(path)

    h = Harness(model_dir, inspector=slow)
    async with h.app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: h.screen._caps is not None)
        await pilot.press("escape")
        await wait_for(pilot, lambda: h.app.results == [None])
        assert not h.screen.is_attached
        release.set()
        await pilot.pause(0.2)
        # A late answer from the engine is ignored too.
        h.screen.show_capabilities(make_event())
        await pilot.pause()
    assert h.app.results == [None]


async def test_results_handed_over_before_mount_are_shown(model_dir: Path) -> None:
    # The engine never answers this time.
    h = Harness(model_dir, answer=lambda _p, _d: None)
    original = h._make

    def make() -> SettingsScreen:
        screen = original()
        screen.show_capabilities(make_event())
        return screen

    h.app._make_screen = make
    async with h.app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "cuda:0" in h.text("#verdicts"))
        values = [value for _, value in h.screen.query_one("#device", Select)._options]
    assert values == ["auto", "cpu", "cuda:0"]
