"""`Conversation`: the chat as the model sees it, and which reply is in flight. No widgets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mergechat.core.api import ChatMessage, FinishReason

ReplyKind = Literal["new", "regenerate", "continue"]

#: Finish reasons after which a reply can be continued.
CONTINUABLE: frozenset[FinishReason] = frozenset({"length", "stopped"})


@dataclass
class PendingReply:
    """A reply requested from the engine and not finished yet."""

    request_id: int
    kind: ReplyKind


class Conversation:
    """Messages sent to the engine, the reply in flight and how the last one ended."""

    def __init__(self) -> None:
        self.messages: list[ChatMessage] = []
        self.pending: PendingReply | None = None
        #: How the last assistant message ended (None: no reply yet, or it failed).
        self.last_finish: FinishReason | None = None
        #: Called when the reply in flight ends: finished, stopped, failed or cleared away.
        self.on_reply_end: Callable[[], None] | None = None

    @property
    def busy(self) -> bool:
        """True while a reply is requested or streaming."""
        return self.pending is not None

    @property
    def can_regenerate(self) -> bool:
        """True when there is a user turn to answer again and nothing is in flight."""
        return not self.busy and any(m.role == "user" for m in self.messages)

    @property
    def can_continue(self) -> bool:
        """True when the last reply was cut off (by max_new_tokens or a stop)."""
        return (
            not self.busy
            and bool(self.messages)
            and self.messages[-1].role == "assistant"
            and self.last_finish in CONTINUABLE
        )

    def add_user(self, text: str) -> list[ChatMessage]:
        """Append a user turn; return the messages to generate from."""
        self.messages.append(ChatMessage("user", text))
        self.last_finish = None
        return list(self.messages)

    def drop_last_reply(self) -> list[ChatMessage]:
        """Remove the last assistant turn (if any); return the messages to generate from."""
        if self.messages and self.messages[-1].role == "assistant":
            self.messages.pop()
        self.last_finish = None
        return list(self.messages)

    def begin(self, request_id: int, kind: ReplyKind) -> None:
        """Record the request id of the reply just asked for."""
        self.pending = PendingReply(request_id, kind)

    def is_current(self, request_id: int) -> bool:
        """True when ``request_id`` is the reply in flight."""
        return self.pending is not None and self.pending.request_id == request_id

    def finish(self, text: str, finish: FinishReason) -> None:
        """Store a finished (or stopped) reply; a continuation extends the last assistant turn."""
        pending, self.pending = self.pending, None
        if pending is not None and pending.kind == "continue" and self.messages:
            last = self.messages[-1]
            self.messages[-1] = ChatMessage("assistant", last.content + text)
        elif text or finish != "stopped":
            self.messages.append(ChatMessage("assistant", text))
        self.last_finish = finish
        self._ended(pending)

    def fail(self) -> None:
        """Forget the reply in flight; a failed reply is not part of the conversation."""
        pending, self.pending = self.pending, None
        if pending is not None and pending.kind != "continue":
            self.last_finish = None
        self._ended(pending)

    def clear(self) -> None:
        """Start a new chat (a reply in flight is forgotten: its engine events are ignored)."""
        pending, self.pending = self.pending, None
        self.messages.clear()
        self.last_finish = None
        self._ended(pending)

    def _ended(self, pending: PendingReply | None) -> None:
        if pending is not None and self.on_reply_end is not None:
            self.on_reply_end()
