"""`DeferredEngine`: an `EngineClient` the UI can call before the real engine exists.

The real engine is built off the UI thread (building it imports torch, which takes seconds), so
the screens get this stand-in at once. Calls made before the engine is ready are kept in order and
replayed when `attach` hands over the real one. Used from the UI thread only.
"""

from __future__ import annotations

from collections.abc import Callable

from mergechat.core.api import EngineClient
from mergechat.core.client_base import ClientBase
from mergechat.core.client_commands import Command, GenerateCommand, apply, ask_reply


class EngineNotReadyError(RuntimeError):
    """`generate` was called before the engine exists (there is no request id to return)."""


class DeferredEngine(ClientBase):
    """Forwards to the real engine once attached; queues load/detect/switch until then."""

    def __init__(self) -> None:
        super().__init__()
        self._engine: EngineClient | None = None
        self._pending: list[Callable[[EngineClient], object]] = []

    @property
    def ready(self) -> bool:
        """True once the real engine is attached."""
        return self._engine is not None

    def attach(self, engine: EngineClient) -> None:
        """Hand over the started engine and replay the calls made so far."""
        self._engine = engine
        pending, self._pending = self._pending, []
        for call in pending:
            call(engine)

    def _call(self, call: Callable[[EngineClient], object]) -> None:
        if self._engine is None:
            self._pending.append(call)
        else:
            call(self._engine)

    def start(self) -> None:
        """No-op: the real engine is started by whoever builds it."""

    def _submit(self, command: Command) -> None:
        """Load, switch or detect (queued until the engine exists)."""
        self._call(lambda engine: apply(engine, command))

    def _reply(self, command: GenerateCommand) -> int:
        """Start a reply and return its request id; raises `EngineNotReadyError` before start."""
        if self._engine is None:
            raise EngineNotReadyError("the engine is still starting")
        return ask_reply(self._engine, command)

    def cancel(self) -> None:
        """Stop the running reply; before start there is nothing to stop."""
        if self._engine is not None:
            self._engine.cancel()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the real engine, if any, and drop queued calls."""
        self._pending.clear()
        if self._engine is not None:
            self._engine.shutdown(timeout)
