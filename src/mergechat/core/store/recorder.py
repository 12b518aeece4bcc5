"""`ReplyRecorder`: saves a streaming reply at most once per interval, and once at the end."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mergechat.core.api import ReplyStats
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.records import MessageState

if TYPE_CHECKING:
    from mergechat.core.store.store import HistoryStore


class ReplyRecorder:
    """Saves a streaming reply: at most one write per ``interval_s``, and a final write."""

    def __init__(
        self,
        store: HistoryStore,
        message_id: int,
        interval_s: float = 1.0,
        *,
        initial_text: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Record into the existing message ``message_id`` whose stored text is ``initial_text``."""
        self.store = store
        self.message_id = message_id
        self.interval_s = interval_s
        self._clock = clock
        self._last_write = clock()
        self._written = initial_text
        self._pending = initial_text
        self.finished = False

    @property
    def pending_text(self) -> str:
        """The latest text given (written or not)."""
        return self._pending

    def update(self, text: str) -> bool:
        """Note the reply's full text so far; write it when ``interval_s`` passed since the last.

        Returns True when it wrote. Raises `HistoryUnavailable` when the write fails.
        """
        if self.finished:
            return False
        self._pending = text
        if self._clock() - self._last_write < self.interval_s:
            return False
        return self.flush()

    def flush(self) -> bool:
        """Write the latest text now (state stays ``streaming``); True when there was news."""
        if self.finished or self._pending == self._written:
            return False
        self.store.update_reply(self.message_id, self._pending, "streaming")
        self._written = self._pending
        self._last_write = self._clock()
        return True

    def finish(
        self,
        text: str,
        state: MessageState,
        stats: ReplyStats | None = None,
        settings: GenerationSettings | None = None,
        *,
        model_path: str | os.PathLike[str] | None = None,
        finish_reason: str | None = None,
        error: str | None = None,
    ) -> None:
        """Write the final text, state and what produced the reply; later calls do nothing."""
        if self.finished:
            return
        self.finished = True
        self.store.update_reply(
            self.message_id,
            text,
            state,
            stats=stats,
            settings=settings,
            model_path=model_path,
            finish_reason=finish_reason,
            error=error,
        )
        self._written = self._pending = text
