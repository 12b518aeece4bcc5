"""Helpers for app tests: build the app around a `FakeEngine`, wait for conditions, read notices.

Notices are recorded by wrapping Textual's public ``App.notify`` (see `record_notifications`,
autouse in tests/ui/conftest.py), so no test reads the app's private notification list.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import pytest
from textual.app import App
from textual.notifications import Notification, SeverityLevel
from textual.pilot import Pilot
from textual.screen import Screen

from fixtures.fake_engine import FakeEngine, Script
from mergechat.core.api import EventSink, ReplyFinished
from mergechat.ui.app import MergechatApp
from mergechat.ui.options import AppOptions
from mergechat.ui.widgets.assistant_message import AssistantMessage

MODEL_PATH = Path("/models/fake-merge")
#: The terminal most app tests run in.
SIZE = (100, 30)

S = TypeVar("S", bound=Screen[Any])

#: Every notification each app was asked to show, in order (expired or cleared ones included).
_NOTIFIED: WeakKeyDictionary[App[Any], list[Notification]] = WeakKeyDictionary()


class FakeApp:
    """A `MergechatApp` plus the `FakeEngine` it built."""

    def __init__(self, script: Script | None = None, options: AppOptions | None = None) -> None:
        self.script = script or Script()
        self.engine: FakeEngine | None = None
        self.app = MergechatApp(
            options or AppOptions(model_path=MODEL_PATH), engine_factory=self._factory
        )

    def _factory(self, sink: EventSink) -> FakeEngine:
        self.engine = FakeEngine(sink, self.script)
        return self.engine


async def wait_for(
    pilot: Pilot[Any], predicate: Callable[[], object], timeout: float = 5.0
) -> None:
    """Let the app run until ``predicate()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        await pilot.pause(0.01)
    await asyncio.sleep(0)


def write_config(text: str) -> Path:
    """Write ``text`` as the user's config.toml (in the test's config dir); return its path."""
    path = Path(os.environ["MERGECHAT_CONFIG_DIR"]) / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


async def ready(fake: FakeApp, pilot: Pilot[Any]) -> None:
    """Until the fake model is loaded and the chat takes a prompt."""
    await wait_for(pilot, lambda: fake.app.chat.phase == "ready")


@asynccontextmanager
async def ready_app(fake: FakeApp, size: tuple[int, int] = SIZE) -> AsyncIterator[Pilot[Any]]:
    """Run ``fake``'s app (headless, ``size``) and hand over its pilot once it is `ready`."""
    async with fake.app.run_test(size=size) as pilot:
        await ready(fake, pilot)
        yield pilot


async def send(pilot: Pilot[Any], text: str) -> None:
    """Type ``text`` into the prompt and press Enter."""
    await pilot.press(*text)
    await pilot.press("enter")


async def open_screen(fake: FakeApp, pilot: Pilot[Any], key: str, kind: type[S]) -> S:
    """Press ``key`` and wait until a ``kind`` screen is on top; return it."""
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(fake.app.screen, kind))
    screen = fake.app.screen
    assert isinstance(screen, kind)
    return screen


def real_app(
    model: Path, *, device: str | None = "cpu", dtype: str | None = None, **generation: object
) -> MergechatApp:
    """A `MergechatApp` with its real engine on ``model``; ``generation`` overrides settings."""
    options = AppOptions(
        model_path=model, device=device, dtype=dtype, generation_overrides=generation
    )
    return MergechatApp(options)


async def model_ready(app: MergechatApp, pilot: Pilot[Any], timeout: float = 120.0) -> None:
    """Until the app's model is loaded; a failed load fails the test with what the app said."""
    await wait_for(pilot, lambda: app.chat.phase in ("ready", "error"), timeout)
    assert app.chat.phase == "ready", notices(app)


async def reply_done(fake: FakeApp, pilot: Pilot[Any], count: int = 1, *, footer: str = "") -> None:
    """Wait until ``count`` replies finished, the chat is ready again and the last reply is
    rendered with ``footer`` in its footer line."""

    def done() -> bool:
        assert fake.engine is not None
        finished = [e for e in fake.engine.events if isinstance(e, ReplyFinished)]
        replies = fake.app.chat.query(AssistantMessage)
        return (
            len(finished) >= count
            and fake.app.chat.phase == "ready"
            and not fake.app.chat.conversation.busy
            and bool(replies)
            and not replies.last().streaming
            and footer in replies.last().footer_text
        )

    await wait_for(pilot, done)


async def send_and_wait(fake: FakeApp, pilot: Pilot[Any], text: str, count: int) -> None:
    """`send` ``text`` and wait until reply number ``count`` is finished and shown."""
    await send(pilot, text)
    await reply_done(fake, pilot, count)


def record_notifications(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wrap ``App.notify`` so each app's notifications can be read with `notifications`."""
    real_notify = App.notify

    def notify(
        self: App[Any],
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        shown = timeout if timeout is not None else self.NOTIFICATION_TIMEOUT
        _NOTIFIED.setdefault(self, []).append(
            Notification(message, title, severity, shown, markup=markup)
        )
        real_notify(self, message, title=title, severity=severity, timeout=timeout, markup=markup)

    monkeypatch.setattr(App, "notify", notify)


def notifications(app: App[Any]) -> list[Notification]:
    """What ``app`` was asked to show so far (text as Textual got it: control chars escaped)."""
    return list(_NOTIFIED.get(app, ()))


def frame_bytes(app: App[Any]) -> str:
    """What Textual would write to the terminal to paint ``app``'s whole screen now.

    No public API gives a frame's bytes, so this one helper reads the screen's compositor."""
    update = app.screen._compositor.render_full_update()
    return update.render_segments(app.console)


def notices(app: App[Any]) -> list[str]:
    """The messages of `notifications`."""
    return [n.message for n in notifications(app)]
