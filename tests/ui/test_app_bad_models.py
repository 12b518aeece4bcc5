"""Issue 7's bad-input matrix in the app, with the real engine and tiny models.

For every row of `fixtures.broken_models.CASES`: the app opens on the broken path, shows one
notice with the message and hint the CLI gives, stays usable, and (for some rows) F2 → the good
model → a reply works. Also bad devices and dtypes, and out of memory at load and mid-reply.
"""

from __future__ import annotations

import contextlib
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from app_helpers import notifications, wait_for
from textual.notifications import Notification
from textual.pilot import Pilot
from textual.widgets import Input

from fixtures.broken_models import CASES, Case
from mergechat.cli import main as cli
from mergechat.ui.app import MergechatApp
from mergechat.ui.options import AppOptions
from mergechat.ui.screens.settings import SettingsScreen
from mergechat.ui.widgets.assistant_message import AssistantMessage
from mergechat.ui.widgets.status_bar import StatusBar

pytestmark = pytest.mark.slow

SIZE = (100, 32)
GENERATION = {"max_new_tokens": 6, "temperature": 0.0}
#: Rows that also go F2 → good model → chat: one per stage where mergechat catches it (the
#: path, inspection, the first forward pass); the device and OOM tests go through settings too.
THROUGH_SETTINGS = {"missing_path", "truncated_safetensors", "nan_weights"}


def notices(app: MergechatApp, severity: str | None = None) -> list[Notification]:
    return [n for n in notifications(app) if severity in (None, n.severity)]


def flat(text: str) -> str:
    """Whitespace folded, as the CLI prints a message on one line."""
    return " ".join(text.split())


@dataclass(frozen=True)
class CliSays:
    """What one-shot ``mergechat PATH --prompt hi`` wrote on stderr, each line whitespace-folded."""

    code: int
    #: ``MESSAGE hint: HINT`` of the ``mergechat: error:`` line ("" when there was none).
    error: str
    warnings: tuple[str, ...]


def cli_says(path: Path, *flags: str) -> CliSays:
    """Run one-shot mode in-process on ``path`` (sharing the probe cache with the app)."""
    err = io.StringIO()
    argv = [str(path), "--prompt", "hi", "--max-new-tokens", "1", "--no-history", *flags]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    error, warnings = "", []
    for line in err.getvalue().splitlines():
        if line.startswith("mergechat: error: "):
            error = line.removeprefix("mergechat: error: ")
        elif line.startswith("  hint: ") and error:
            error += " hint: " + line.removeprefix("  hint: ")
        elif line.startswith("mergechat: warning: "):
            warnings.append(line.removeprefix("mergechat: warning: "))
    return CliSays(code, flat(error), tuple(flat(w) for w in warnings))


def open_app(path: Path, **options: Any) -> MergechatApp:
    return MergechatApp(AppOptions(model_path=path, generation_overrides=GENERATION, **options))


async def settled(app: MergechatApp, pilot: Pilot[Any]) -> None:
    """Wait for the load to end (ready or error) and its notices to arrive."""
    await wait_for(pilot, lambda: app.chat.phase in ("ready", "error"), timeout=60)
    await pilot.pause(0.1)


async def chat_once(app: MergechatApp, pilot: Pilot[Any], text: str = "hi") -> str:
    """Send ``text``; return the reply once it is complete."""
    chat = app.chat
    before = len(chat.conversation.messages)
    await pilot.press(*text, "enter")
    await wait_for(
        pilot,
        lambda: chat.phase == "ready" and len(chat.conversation.messages) == before + 2,
        timeout=60,
    )
    reply = chat.conversation.messages[-1]
    assert reply.role == "assistant" and reply.content
    return reply.content


async def still_usable_without_a_model(app: MergechatApp, pilot: Pilot[Any]) -> None:
    """The prompt keeps its text, Enter says how to get a model, F1 and F2 open."""
    chat = app.chat
    assert app.is_running and chat.phase == "error" and app.model_state is None
    assert chat.status.info.model == "" and not chat.load_progress.active
    await pilot.press("h", "i", "enter")
    assert chat.prompt.text == "hi"
    await wait_for(pilot, lambda: any("press F2" in n.message for n in notices(app)))
    chat.prompt.clear()


async def choose_model_in_settings(app: MergechatApp, pilot: Pilot[Any], path: Path) -> None:
    """F2, type ``path`` over the old one, Apply (answering yes to a confirmation)."""
    before = app.session.pending_request
    await pilot.press("f2")
    await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen))
    screen = app.screen
    assert isinstance(screen, SettingsScreen)
    field = screen.query_one("#model-path", Input)
    field.value = str(path)
    field.focus()
    # The path is inspected once typing stops, then the detector judges it.
    await wait_for(
        pilot,
        lambda: screen._inspected == str(path) and screen._info is not None and screen._caps,
        timeout=30,
    )
    await pilot.pause(0.1)
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: app.screen is not screen)
    if app.screen is not app.chat:  # "Use this precision?"
        await pilot.press("y")
    await wait_for(pilot, lambda: app.session.pending_request is not before)


@pytest.mark.parametrize("name", list(CASES))
async def test_each_broken_model_gives_one_notice_and_the_app_stays_usable(
    name: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    case: Case = CASES[name]
    path = case.builder(tmp_path, tiny_model_dir)
    cli = cli_says(path)  # what the app must say too
    app = open_app(path)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settled(app, pilot)
        errors, warnings = notices(app, "error"), notices(app, "warning")
        if case.expected == "error":
            assert len(errors) == 1 and not warnings, [n.message for n in notices(app)]
            assert errors[0].title == "Load failed"
            await still_usable_without_a_model(app, pilot)
            if name in THROUGH_SETTINGS:
                await choose_model_in_settings(app, pilot, tiny_model_dir)
                await settled(app, pilot)
                assert app.model_state is not None and app.model_state.path == tiny_model_dir
        else:
            assert not errors, [n.message for n in errors]
            assert app.model_state is not None and app.chat.phase == "ready"
            # Chatting with the fallback template stays marked in the status bar.
            status = str(StatusBar.render_content(app.chat.status.info))
            assert ("ChatML fallback" in status) == (name == "no_chat_template"), status
        if app.model_state is not None:
            await chat_once(app, pilot)
        assert app.is_running
    if case.expected == "error":
        for text in case.must_contain:
            assert text in errors[0].message
        # The same message and hint as the CLI's `mergechat: error:` line.
        assert flat(errors[0].message) == cli.error
    else:
        # The same warnings as the CLI's (the detector's advice included: same probe cache).
        assert sorted(flat(n.message) for n in warnings) == sorted(cli.warnings)
        if case.expected == "warning":  # one of them is the row's own
            own = [n for n in warnings if all(text in n.message for text in case.must_contain)]
            assert len(own) == 1, [n.message for n in warnings]


@pytest.mark.parametrize("device", ["cuda:3", "mps"])
async def test_a_device_this_machine_lacks_is_one_notice_then_settings_falls_back_to_auto(
    device: str, tiny_model_dir: Path
) -> None:
    message = f"device {device} is not available"
    cli = cli_says(tiny_model_dir, "--device", device)
    assert cli.code == 2 and message in cli.error
    app = open_app(tiny_model_dir, device=device)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settled(app, pilot)
        errors = notices(app, "error")
        assert len(errors) == 1 and message in errors[0].message, [n.message for n in errors]
        await still_usable_without_a_model(app, pilot)
        if device == "mps":
            return  # the same path as cuda:3 from here on
        # Settings finds the device missing, says so, and applies with auto.
        await choose_model_in_settings(app, pilot, tiny_model_dir)
        assert any(f"device {device} is not on this machine" in n.message for n in notices(app))
        await settled(app, pilot)
        assert app.model_state is not None and app.model_state.device == "cpu"
        assert app.config.model.device == "auto"
        await chat_once(app, pilot)


async def test_an_unknown_dtype_option_is_a_warning_and_the_model_loads(
    tiny_model_dir: Path,
) -> None:
    cli = cli_says(tiny_model_dir, "--dtype", "float8")
    assert cli.code == 2 and "unknown dtype 'float8'" in cli.error
    app = open_app(tiny_model_dir, dtype="float8")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settled(app, pilot)
        assert any("unknown dtype 'float8'" in n.message for n in notices(app, "warning"))
        assert app.chat.phase == "ready" and not notices(app, "error")
        await chat_once(app, pilot)


def _oom(kind: str) -> Exception:
    import torch

    if kind == "cuda":
        return torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
            "15.70 GiB of which 1.06 GiB is free."
        )
    return RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 17179869184 bytes. Error code 12 (Cannot allocate memory)"
    )


async def test_out_of_memory_at_load_keeps_the_app_and_the_previous_model(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fixtures.broken_models import copy_good
    from mergechat.core.engine import loader

    big = copy_good(tiny_model_dir, tmp_path / "too-big")
    kinds = iter(["cuda", "cpu"])
    real_load_weights = loader.load_weights

    def load_weights(info: Any, *args: Any, **kwargs: Any) -> Any:
        # Runs on the engine thread, where from_pretrained would run out of memory.
        if info.path == big.resolve():
            raise _oom(next(kinds))
        return real_load_weights(info, *args, **kwargs)

    monkeypatch.setattr(loader, "load_weights", load_weights)
    # The fault is patched into this process's loader: the engine must run here, too.
    monkeypatch.setenv("MERGECHAT_ENGINE", "thread")
    app = open_app(big)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        # No model before: the notice, and an app that still opens settings.
        await settled(app, pilot)
        (error,) = notices(app, "error")
        assert "out of memory" in error.message and "smaller dtype" in error.message
        await still_usable_without_a_model(app, pilot)
        await choose_model_in_settings(app, pilot, tiny_model_dir)
        await settled(app, pilot)
        first = await chat_once(app, pilot)
        # A model loaded: the failed load released it, and the app loads it again.
        await choose_model_in_settings(app, pilot, big)
        await wait_for(pilot, lambda: len(notices(app, "error")) == 2, timeout=60)
        await settled(app, pilot)
        second = notices(app, "error")[-1].message
        assert "not enough RAM" in second and f"Loading {tiny_model_dir.name} again" in second
        assert app.model_state is not None and app.model_state.path == tiny_model_dir
        assert app.chat.status.info.model == tiny_model_dir.name
        assert await chat_once(app, pilot) == first  # greedy: the same model answers the same
        assert len(app.chat.conversation.messages) == 4


async def test_out_of_memory_mid_reply_fails_the_turn_and_the_next_prompt_works(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers.models.llama import modeling_llama

    cls = modeling_llama.LlamaForCausalLM
    real_forward = cls.forward
    armed = threading.Event()
    calls: list[int] = []

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        if armed.is_set():
            calls.append(1)
            if len(calls) == 4:  # the prompt and two tokens went through
                raise _oom("cuda")
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", forward)
    monkeypatch.setenv("MERGECHAT_ENGINE", "thread")  # the fault is patched into this process
    app = open_app(tiny_model_dir)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settled(app, pilot)
        state = app.model_state
        armed.set()
        await pilot.press("h", "i", "enter")
        await wait_for(pilot, lambda: bool(notices(app, "error")), timeout=60)
        (error,) = notices(app, "error")
        assert error.title == "Reply failed" and "out of memory" in error.message
        reply = app.chat.query_one(AssistantMessage)
        await wait_for(pilot, lambda: reply.footer_text.startswith("failed: out of memory"))
        assert reply.body.source  # the tokens before the failure are kept
        assert app.model_state == state and app.chat.phase == "ready"
        armed.clear()
        await chat_once(app, pilot, "again")
        assert app.is_running
