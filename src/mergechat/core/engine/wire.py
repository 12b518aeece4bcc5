"""What the engine process sends the app over its pipe: events, reply starts, text chunks.

The commands going the other way are `mergechat.core.client_commands`. Everything pickles; nothing
imports torch. A reply's `ReplyStream` cannot cross (its decoder is the tokenizer), so the engine
process decodes it and sends text chunks that a `RelayedStream` in the app hands out with the same
interface the widgets already drain.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from mergechat.core.api import EngineEvent
from mergechat.core.streaming import ReplyStream


# -- engine process -> app ------------------------------------------------------------------------
@dataclass(frozen=True)
class EventMessage:
    """Any engine event but `ReplyStarted`, request ids already the app's."""

    event: EngineEvent


@dataclass(frozen=True)
class StartedMessage:
    """`ReplyStarted` without its stream (the text follows as `ChunkMessage`s)."""

    request_id: int
    prompt_tokens: int
    context_max: int
    dropped_messages: int


@dataclass(frozen=True)
class ChunkMessage:
    """Text decoded since the last chunk, the token ids generated since then, and how many
    tokens the reply holds now (the ids let a comparison match replies token by token)."""

    request_id: int
    text: str
    tokens: int
    ids: tuple[int, ...] = ()


Message = EventMessage | StartedMessage | ChunkMessage


def _no_decode(_ids: object) -> str:
    return ""


class RelayedStream(ReplyStream):
    """A `ReplyStream` whose text arrives already decoded, in chunks from the engine process.

    ``token_count`` is the count that goes with the text drained so far, so a consumer that
    drains and then reads the count never sees a count whose text it has not drained.
    """

    def __init__(self) -> None:
        super().__init__(_no_decode)
        self._relay_lock = threading.Lock()
        self._pending: list[str] = []
        self._received: list[str] = []
        self._drained: list[str] = []
        self._latest_tokens = 0
        self._drained_tokens = 0

    def feed(self, text: str, tokens: int, ids: Sequence[int] = ()) -> None:
        """Add a chunk and its new token ids (called on the app's reader thread)."""
        self.push(ids)
        with self._relay_lock:
            if text:
                self._pending.append(text)
                self._received.append(text)
            self._latest_tokens = max(self._latest_tokens, tokens)

    @property
    def token_count(self) -> int:
        """Tokens whose text has been drained."""
        with self._relay_lock:
            return self._drained_tokens

    def drain(self) -> str:
        """Return the text received since the last call (possibly empty)."""
        with self._relay_lock:
            text = "".join(self._pending)
            self._pending.clear()
            self._drained_tokens = self._latest_tokens
            if text:
                self._drained.append(text)
            return text

    @property
    def text(self) -> str:
        """All text drained so far."""
        with self._relay_lock:
            return "".join(self._drained)

    @property
    def received_text(self) -> str:
        """All text received so far, drained or not (a crashed reply keeps it)."""
        with self._relay_lock:
            return "".join(self._received)
