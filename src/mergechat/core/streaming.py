"""`ReplyStream`: token ids from the engine thread, decoded to text in batches by the consumer.

The engine thread only appends ids (a list append under a lock: no decoding, no per-token
messages), so generation runs at full speed; the UI or CLI drains the stream on its own schedule.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import ClassVar

Decode = Callable[[Sequence[int]], str]


class ReplyStream:
    """A growing list of new token ids plus an incremental decoder for the consumer side."""

    #: The ids are the model's token ids (a stream of text pieces numbers its pieces instead).
    model_ids: ClassVar[bool] = True

    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self._lock = threading.Lock()
        self._ids: list[int] = []
        self._closed = False
        # Consumer-side decoding state: text is decoded from ``_prefix_start`` so each drain
        # re-decodes only a short tail instead of the whole reply.
        self._prefix_start = 0
        self._read_offset = 0
        self._text_parts: list[str] = []

    # -- producer (engine thread) -------------------------------------------------------------
    def push(self, ids: Sequence[int]) -> None:
        """Append new token ids (called on the engine thread)."""
        with self._lock:
            self._ids.extend(ids)

    def close(self) -> None:
        """Mark the reply complete; `closed` becomes True."""
        with self._lock:
            self._closed = True

    # -- consumer -------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once the engine finished (or stopped) this reply."""
        with self._lock:
            return self._closed

    def token_ids(self, start: int = 0) -> list[int]:
        """A copy of the ids received so far from ``start`` on (a comparison matches replies
        token by token; the engine process sends each batch's new ids)."""
        with self._lock:
            return self._ids[start:]

    @property
    def token_count(self) -> int:
        """Number of token ids received so far."""
        with self._lock:
            return len(self._ids)

    def drain(self) -> str:
        """Return the text added since the last call (possibly empty).

        An incomplete multi-byte character (decoded as U+FFFD) is held back until it completes
        or the stream closes.
        """
        with self._lock:
            end = len(self._ids)
            ids = self._ids[self._prefix_start : end]
            closed = self._closed
        if end == self._read_offset:
            return ""
        prefix_text = self._decode(ids[: self._read_offset - self._prefix_start])
        full_text = self._decode(ids)
        if full_text.endswith("\ufffd") and not closed:
            return ""
        new_text = full_text[len(prefix_text) :]
        self._prefix_start, self._read_offset = self._read_offset, end
        self._text_parts.append(new_text)
        return new_text

    @property
    def text(self) -> str:
        """All text drained so far."""
        return "".join(self._text_parts)
