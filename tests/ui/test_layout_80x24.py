"""Issue 16 item 19: the chat screen at 80x24, a common terminal size.

Notices never cover the prompt or the status bar, the footer shows the keys a newcomer needs, the
status bar keeps the context figure while a reply streams, and an empty chat says what to do.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from app_helpers import FakeApp, ready, ready_app, wait_for
from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import Footer

from fixtures.fake_engine import Script
from mergechat.ui.options import AppOptions
from mergechat.ui.widgets.empty_hint import hint_text, key_name
from mergechat.ui.widgets.status_bar import StatusBar, StatusInfo
from mergechat.ui.widgets.toast_room import TOAST_RACK_ID

SIZE = (80, 24)
LONG_NAME = "Qwen2.5-7B-Instruct-dare-ties-merge-v2"
#: A status line with every part in it: a long name, the merge, speed, context, no template.
BUSY = StatusInfo(
    "generating",
    model=LONG_NAME,
    device="cuda:0",
    dtype="bfloat16",
    merge_method="dare_ties",
    tokens_per_s=23.4,
    context_used=1234,
    context_max=32768,
    fallback_template=True,
)


def _toasts(fake: FakeApp) -> list[Widget]:
    rack = fake.app.screen.get_child_by_id(TOAST_RACK_ID)
    return [toast for holder in rack.children for toast in holder.children]


def _on_screen(region: Region) -> Region:
    return region.intersection(Region(0, 0, *SIZE))


async def test_notices_never_cover_the_prompt_or_the_status_bar() -> None:
    fake = FakeApp()
    async with fake.app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(fake, pilot)
        chat = fake.app.chat
        for lines in (1, 4):  # the prompt grows as lines are typed: the notices move up
            await pilot.press(*(["x", "ctrl+j"] * (lines - 1)), "x")
            for i in range(4):
                fake.app.notify(f"notice {i}: " + "a long line of text " * 4, severity="warning")
            await pilot.pause(0.2)
            toasts = [_on_screen(t.region) for t in _toasts(fake)]
            assert toasts and any(toasts)
            for covered in (chat.prompt, chat.status, fake.app.screen.query_one(Footer)):
                assert covered is not None
                for toast in toasts:
                    assert not toast.overlaps(covered.region), (toast, covered)
            fake.app.clear_notifications()
        assert chat.prompt.region.height >= 4


async def test_the_footer_shows_the_keys_that_matter_most() -> None:
    fake = FakeApp(Script(reply=["word "] * 400, token_delay=0.01))
    async with ready_app(fake, SIZE) as pilot:
        await pilot.press("h", "i", "enter")
        await wait_for(pilot, lambda: fake.app.chat.phase == "generating")
        await pilot.pause(0.2)
        keys = list(fake.app.screen.query("FooterKey"))  # by CSS type: its class is private
        seen = {key.action for key in keys if key.region.right <= SIZE[0] and key.region.width}
        assert {"submit", "stop", "help", "settings", "precision", "quit"} <= seen, seen
        regions = [key.region for key in keys if key.region.width]
        for i, region in enumerate(regions):  # the palette key no longer hides ctrl+t
            assert not any(region.overlaps(other) for other in regions[i + 1 :]), regions
        await pilot.press("escape")


async def test_the_status_bar_keeps_the_context_figure_while_generating() -> None:
    fake = FakeApp(
        Script(reply=["word "] * 400, token_delay=0.01),
        AppOptions(model_path=Path("/models") / LONG_NAME),
    )
    async with ready_app(fake, SIZE) as pilot:
        chat = fake.app.chat
        await pilot.press("h", "i", "enter")
        await wait_for(pilot, lambda: chat.status.info.tokens_per_s is not None)
        await pilot.pause(0.1)
        assert chat.phase == "generating"
        line = str(chat.status.render())
        assert "generating" in line and "ctx " in line and "bfloat16" in line, line
        assert len(line) <= SIZE[0]
        await pilot.press("escape")


def test_the_status_line_shortens_other_parts_first() -> None:
    info = BUSY
    full = StatusBar.render_content(info).plain
    assert "merge: dare_ties" in full and "no chat template" in full
    for width in (120, 100, 80, 70):
        line = StatusBar.render_content(info, width).plain
        assert len(line) <= width, (width, line)
        assert "ctx 1234/32768" in line and "bfloat16" in line and "generating" in line
        assert "ChatML fallback" in line, line  # shortened, never dropped
    assert "cuda:0" in StatusBar.render_content(info, 100).plain
    assert LONG_NAME[:10] in StatusBar.render_content(info, 80).plain


def test_a_queued_switch_fits_the_status_bar_at_80_columns() -> None:
    info = replace(
        BUSY,
        device="cuda:0+cpu offload",
        tokens_per_s=25.0,
        context_used=2047,
        context_max=2048,
        queued_dtype="float16",
    )
    assert "switch to float16 after this reply" in str(StatusBar.render_content(info, 200))
    line = StatusBar.render_content(info, 80)
    assert line.cell_length <= 80
    for kept in ("bfloat16", " generating ", "ctx 2047/2048", "next: float16"):
        assert kept in str(line), line


async def test_an_empty_chat_says_what_to_do_with_the_real_keys() -> None:
    config = Path(os.environ["MERGECHAT_CONFIG_DIR"]) / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[keymap]\nsettings = "f9"\n')
    fake = FakeApp()
    async with ready_app(fake, SIZE) as pilot:
        view = fake.app.chat.view
        hint = str(view.render())
        assert "Type a message and press Enter to send it." in hint
        assert "F9 settings" in hint and "F2" not in hint  # the user's keymap, not the default
        assert "ctrl+t precision" in hint and "F1 help" in hint
        await pilot.press("h", "i", "enter")
        await wait_for(pilot, lambda: fake.app.chat.phase == "ready" and view.children)
        assert str(view.render()) == ""


def test_key_names_and_hint_without_keys() -> None:
    assert [key_name(k) for k in ("f2", "enter", "escape", "ctrl+t")] == [
        "F2",
        "Enter",
        "Esc",
        "ctrl+t",
    ]
    assert hint_text({}).plain == "Type a message."
