"""Textual messages that carry engine events and engine start-up results onto the UI thread."""

from __future__ import annotations

from textual.message import Message

from mergechat.core.api import EngineClient, EngineEvent


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
