"""Keys and screens: the user keymap, help, the command palette, settings at start, themes."""

from __future__ import annotations

from dataclasses import replace

from app_helpers import MODEL_PATH, SIZE, FakeApp, notifications, ready_app, wait_for, write_config
from textual.command import CommandPalette
from textual.pilot import Pilot

from fixtures.fake_engine import Script
from mergechat.core.settings import locations, recent_models
from mergechat.core.settings.config import load_config
from mergechat.ui.commands import palette_commands
from mergechat.ui.options import AppOptions
from mergechat.ui.screens.help import HelpScreen
from mergechat.ui.screens.settings import SettingsResult, SettingsScreen


async def finished(fake: FakeApp, pilot: Pilot[object], count: int) -> None:
    await wait_for(
        pilot,
        lambda: (
            fake.engine is not None
            and len(fake.engine.generations) == count
            and fake.app.chat.phase == "ready"
            and not fake.app.chat.conversation.busy
        ),
    )


async def test_keymap_rebinds_by_binding_id_and_reports_unknown_ids() -> None:
    write_config('[keymap]\nregenerate = "f5"\nno_such_action = "f6"\n')
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await pilot.press("h", "i", "enter")
        await finished(fake, pilot, 1)
        await pilot.press("ctrl+r")  # no longer bound
        await pilot.pause(0.1)
        assert fake.engine is not None and len(fake.engine.generations) == 1
        await pilot.press("f5")
        await finished(fake, pilot, 2)
        await wait_for(
            pilot, lambda: any("'no_such_action'" in n.message for n in notifications(fake.app))
        )
        # The help screen shows the keys in effect.
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(fake.app.screen, HelpScreen))
        screen = fake.app.screen
        assert isinstance(screen, HelpScreen)
        assert ("f5", "Regenerate") in screen._rows
        assert ("ctrl+t, f3", "Precision") in screen._rows
        await pilot.press("escape")


def test_palette_offers_every_action() -> None:
    fake = FakeApp()
    names = [c.name for c in palette_commands(fake.app)]
    for wanted in (
        "Send",
        "Stop reply",
        "Regenerate",
        "Continue reply",
        "New chat",
        "Settings",
        "Precision: float32",
        "Precision: bfloat16",
        "Precision: float16",
        "Theme",
        "Help",
        "Quit",
    ):
        assert wanted in names


async def test_palette_runs_a_precision_switch() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(fake.app.screen, CommandPalette))
        await pilot.press(*"Precision: float16")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: fake.app.chat.status.info.dtype == "float16")
        assert fake.engine is not None and fake.engine.switches == ["float16"]


async def test_palette_sends_the_prompt() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        await pilot.press(*"from the palette")
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(fake.app.screen, CommandPalette))
        await pilot.press(*"Send")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await finished(fake, pilot, 1)
        assert fake.engine is not None
        assert fake.engine.generations[0][0][-1].content == "from the palette"


async def test_no_path_opens_settings_and_apply_loads_the_model() -> None:
    fake = FakeApp(options=AppOptions())
    async with fake.app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(fake.app.screen, SettingsScreen))
        assert fake.app.chat.phase == "no model"
        # The screen asked the engine (built after the first frame) for the detector's results.
        await wait_for(pilot, lambda: fake.app.capabilities is not None)
        await pilot.pause()
        screen = fake.app.screen
        assert isinstance(screen, SettingsScreen)
        config = fake.app.config
        config = replace(config, model=replace(config.model, path=str(MODEL_PATH), dtype="float32"))
        screen.dismiss(SettingsResult(config, reload=True, switch_dtype=None))
        await wait_for(pilot, lambda: fake.app.chat.phase == "ready")
        assert fake.engine is not None
        assert [(r.path, r.dtype) for r in fake.engine.loads] == [(MODEL_PATH, "float32")]
        assert fake.app.chat.status.info.dtype == "float32"


async def test_command_line_flags_set_the_load_and_generation_values() -> None:
    config_text = '[model]\ndevice = "cpu"\ndtype = "float16"\n[generation]\ntemperature = 0.7\n'
    write_config(config_text)
    options = AppOptions(
        model_path=MODEL_PATH, dtype="bf16", generation_overrides={"max_new_tokens": 7}
    )
    fake = FakeApp(Script(), options=options)
    async with ready_app(fake) as pilot:
        assert fake.engine is not None
        request = fake.engine.loads[0]
        assert (request.path, request.device, request.dtype) == (MODEL_PATH, "cpu", "bfloat16")
        await pilot.press("h", "i", "enter")
        await finished(fake, pilot, 1)
        settings = fake.engine.generations[0][1]
        assert (settings.max_new_tokens, settings.temperature) == (7, 0.7)
    # Flags are for this run, and a load never rewrites the config file: the recent models are
    # in the state file.
    assert locations.config_file().read_text(encoding="utf-8") == config_text
    assert recent_models.load_recent([]) == [str(MODEL_PATH)]


async def test_a_config_with_a_syntax_error_is_never_replaced() -> None:
    broken = '# mine\n[generation]\ntemperature = 0.7\nsystem_prompt = "unclosed\n'
    path = write_config(broken)
    fake = FakeApp(Script(), options=AppOptions(model_path=MODEL_PATH))
    async with ready_app(fake) as pilot:
        assert any("invalid TOML" in n.message for n in notifications(fake.app))
        fake.app.theme = "mergechat-light"  # a choice the app would save
        await pilot.pause()
        assert any("was not changed" in n.message for n in notifications(fake.app))
    assert path.read_text(encoding="utf-8") == broken


async def test_theme_choice_is_saved_and_a_bad_theme_name_falls_back() -> None:
    write_config('[ui]\ntheme = "no-such-theme"\n')
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        assert fake.app.theme == "mergechat-dark"
        assert any("no-such-theme" in n.message for n in notifications(fake.app))
        assert load_config()[0].theme == "no-such-theme"  # not overwritten by the fallback
        fake.app.theme = "mergechat-light"
        await wait_for(pilot, lambda: load_config()[0].theme == "mergechat-light")
