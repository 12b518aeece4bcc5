"""`DeferredEngine`: an `EngineClient` the UI can call before the real engine exists.

The real engine is built off the UI thread (building it imports torch, which takes seconds), so
the screens get this stand-in at once. Calls made before the engine is ready are kept in order and
replayed when `attach` hands over the real one. Used from the UI thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from mergechat.core.api import ChatMessage, EngineClient, LoadRequest
from mergechat.core.dtypes import DType
from mergechat.core.settings.generation import GenerationSettings


class EngineNotReadyError(RuntimeError):
    """`generate` was called before the engine exists (there is no request id to return)."""


class DeferredEngine:
    """Forwards to the real engine once attached; queues load/detect/switch until then."""

    def __init__(self) -> None:
        self._engine: EngineClient | None = None
        self._pending: list[Callable[[EngineClient], None]] = []

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

    def _call(self, call: Callable[[EngineClient], None]) -> None:
        if self._engine is None:
            self._pending.append(call)
        else:
            call(self._engine)

    def start(self) -> None:
        """No-op: the real engine is started by whoever builds it."""

    def load(self, request: LoadRequest) -> None:
        """Load a model (queued until the engine exists)."""
        self._call(lambda engine: engine.load(request))

    def generate(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        *,
        continue_last: bool = False,
    ) -> int:
        """Start a reply and return its request id; raises `EngineNotReadyError` before start."""
        if self._engine is None:
            raise EngineNotReadyError("the engine is still starting")
        return self._engine.generate(messages, settings, continue_last=continue_last)

    def cancel(self) -> None:
        """Stop the running reply; before start there is nothing to stop."""
        if self._engine is not None:
            self._engine.cancel()

    def switch_dtype(self, dtype: DType) -> None:
        """Switch precision (queued until the engine exists)."""
        self._call(lambda engine: engine.switch_dtype(dtype))

    def detect(self, model_path: Path | None = None, device: str = "auto") -> None:
        """Run the capability detector (queued until the engine exists)."""
        self._call(lambda engine: engine.detect(model_path, device))

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the real engine, if any, and drop queued calls."""
        self._pending.clear()
        if self._engine is not None:
            self._engine.shutdown(timeout)
