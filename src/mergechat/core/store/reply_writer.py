"""`ReplyWriter`: saves one streaming reply at most once per interval, and once at the end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from mergechat.core.store.records import MessageState, ReplyDetails, StoredMessage

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from mergechat.core.store.store import HistoryStore

#: How a reply can end: the engine's finish reasons, a failure, or a cut (quit, signal).
ReplyEnd = Literal["complete", "stopped", "length", "failed", "interrupted"]
#: The state each end is stored as ("length" is a complete reply that hit the token cap).
STORED_STATES: Final[dict[ReplyEnd, MessageState]] = {
    "complete": "complete",
    "length": "complete",
    "stopped": "stopped",
    "failed": "failed",
    "interrupted": "stopped",
}


class ReplyWriter:
    """Writes a streaming reply: at most one write per ``interval_s``, and a final write."""

    def __init__(
        self,
        store: HistoryStore,
        message_id: int,
        interval_s: float = 1.0,
        *,
        initial_text: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Write into the existing message ``message_id`` whose stored text is ``initial_text``."""
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

    def finish(self, text: str, state: MessageState, **details: Unpack[ReplyDetails]) -> None:
        """Write the final text, state and what produced the reply; later calls do nothing."""
        if self.finished:
            return
        self.finished = True
        self.store.update_reply(self.message_id, text, state, **details)
        self._written = self._pending = text


@dataclass
class ReplyHandle:
    """One reply being recorded in a conversation; returned by `ChatRecorder.reply_started`."""

    writer: ReplyWriter
    #: For a continuation: the stored reply it extends (its text is kept in front).
    continues: StoredMessage | None = None

    @property
    def message_id(self) -> int:
        """The stored message's id."""
        return self.writer.message_id

    def full_text(self, text: str) -> str:
        """The message's text given what this request generated."""
        return self.continues.text + text if self.continues is not None else text
