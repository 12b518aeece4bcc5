"""Every settings problem is reported: keymap conflicts say which actions share a key, the
prompt names the real send key, and problems past the first few notices are listed by F1."""

from __future__ import annotations

from app_helpers import FakeApp, notices, open_screen, ready_app, wait_for, write_config
from textual.pilot import Pilot
from textual.widgets import Static

from mergechat.ui.screens.help import HelpScreen


async def open_help(fake: FakeApp, pilot: Pilot[object]) -> HelpScreen:
    return await open_screen(fake, pilot, "f1", HelpScreen)


async def test_a_key_given_to_two_actions_is_reported_and_the_prompt_names_it() -> None:
    write_config('[keymap]\nsend = "ctrl+r"\n')
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        assert fake.app.chat.prompt.placeholder == "Message (ctrl+r sends, ctrl+j newline)"
        conflict = "keymap: ctrl+r is given to both 'send' (Send) and 'regenerate' (Regenerate)"
        await wait_for(pilot, lambda: any(m.startswith(conflict) for m in notices(fake.app)))
        screen = await open_help(fake, pilot)
        assert any(p.startswith(conflict) for p in screen._problems)
        assert ("ctrl+r", "Regenerate (key conflict: see Problems)") in screen._rows
        shown = [str(s.render()) for s in screen.query(".help-problem")]
        assert any(conflict in line for line in shown)


async def test_problems_past_the_first_notices_are_all_in_f1() -> None:
    bad = "\n".join(f"k{i} = {i}" for i in range(7))  # seven unknown keys
    write_config(bad + '\n[ui]\ntheme = "x[bold]y"\n')
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        problems = fake.app.settings_problems
        assert len(problems) == 8
        noticed = [m for m in notices(fake.app) if "unknown key" in m or "more settings" in m]
        assert noticed == [*problems[:3], "5 more settings problems: F1 lists them all"]
        screen = await open_help(fake, pilot)
        shown = [str(s.render()) for s in screen.query(".help-problem")]
        assert shown == [f"• {p}" for p in problems]  # "[bold]" stays text
        title = screen.query_one("#help-problems-title", Static)
        assert str(title.render()) == "Settings problems (8)"


async def test_no_problems_no_section() -> None:
    fake = FakeApp()
    async with ready_app(fake) as pilot:
        assert fake.app.chat.prompt.placeholder == "Message (Enter sends, ctrl+j newline)"
        screen = await open_help(fake, pilot)
        assert not screen.query(".help-problem") and not screen.query("#help-problems-title")
