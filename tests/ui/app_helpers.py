"""Helpers for app tests: build the app around a `FakeEngine` and wait for conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from fake_engine import FakeEngine, Script
from textual.pilot import Pilot

from mergechat.core.api import EventSink
from mergechat.ui.app import MergechatApp
from mergechat.ui.options import AppOptions

MODEL_PATH = Path("/models/fake-merge")


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
    pilot: Pilot[object], predicate: Callable[[], object], timeout: float = 5.0
) -> None:
    """Let the app run until ``predicate()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        await pilot.pause(0.01)
    await asyncio.sleep(0)
