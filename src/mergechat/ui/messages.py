"""Textual messages that carry engine events and engine start-up results onto the UI thread,
and the detector's results on to the open screens."""

from __future__ import annotations

from textual.message import Message

from mergechat.core.api import CapabilitiesReady, EngineClient, EngineEvent


class EngineEventMessage(Message):
    """One `EngineEvent`, posted by the engine sink from the engine thread (thread-safe)."""

    def __init__(self, event: EngineEvent) -> None:
        super().__init__()
        self.event = event


class EngineReady(Message):
    """The engine was constructed and started off the UI thread."""

    def __init__(self, engine: EngineClient) -> None:
        super().__init__()
        self.engine = engine


class EngineStartFailed(Message):
    """Constructing or starting the engine raised; the app keeps running without one."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message


class CapabilitiesChanged(Message, bubble=False):
    """The detector answered; sent to every open screen (the settings screen shows it)."""

    def __init__(self, event: CapabilitiesReady) -> None:
        super().__init__()
        self.event = event
