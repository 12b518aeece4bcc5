"""History records: messages, conversations and summaries as plain data, plus the history errors."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict, get_args

from mergechat.core.api import ChatMessage, ReplyStats, Role
from mergechat.core.errors import BadInputError, MergechatError
from mergechat.core.settings.generation import GenerationSettings

MessageState = Literal["complete", "stopped", "failed", "streaming"]
MESSAGE_STATES: Final[tuple[str, ...]] = get_args(MessageState)
ROLES: Final[tuple[str, ...]] = get_args(Role)
UNTITLED: Final = "New conversation"
TITLE_MAX: Final = 60


class HistoryUnavailable(MergechatError):
    """The history database cannot be used (locked, corrupt, unwritable); history is off."""


class ReplyDetails(TypedDict, total=False):
    """What produced a reply and how it ended: the optional fields of a reply's final write."""

    stats: ReplyStats | None
    settings: GenerationSettings | None
    model_path: str | os.PathLike[str] | None
    finish_reason: str | None
    error: str | None


class UnknownConversation(BadInputError):
    """No conversation has the given id."""

    def __init__(self, conv_id: int) -> None:
        super().__init__(f"no conversation with id {conv_id} (mergechat history list shows them)")
        self.conv_id = conv_id


@dataclass(frozen=True)
class StoredMessage:
    """One stored message; the reply fields are None for user messages and unfinished replies."""

    id: int
    conversation_id: int
    role: Role
    text: str
    created: float
    state: MessageState
    model_path: str | None = None
    device: str | None = None
    dtype: str | None = None
    #: The `GenerationSettings` fields the reply was generated with.
    params: dict[str, Any] | None = None
    prompt_tokens: int | None = None
    new_tokens: int | None = None
    tokens_per_s: float | None = None
    ttft_s: float | None = None
    total_s: float | None = None
    context_used: int | None = None
    context_max: int | None = None
    #: The engine's finish reason (``complete``, ``stopped``, ``length``).
    finish_reason: str | None = None
    #: Why the reply failed, for state ``failed``.
    error: str | None = None

    def generation_settings(self) -> GenerationSettings | None:
        """The stored parameters as `GenerationSettings` (keys unknown to this version dropped)."""
        if self.params is None:
            return None
        known = {f.name for f in dataclasses.fields(GenerationSettings)}
        return GenerationSettings(**{k: v for k, v in self.params.items() if k in known})


@dataclass(frozen=True)
class ConversationSummary:
    """A row of the conversation list."""

    id: int
    title: str
    model_path: str
    created: float
    updated: float
    message_count: int
    #: True when the user renamed it (the title is not derived from the first message).
    renamed: bool = False


@dataclass(frozen=True)
class Conversation:
    """A conversation with all its messages, oldest first."""

    id: int
    title: str
    model_path: str
    created: float
    updated: float
    renamed: bool
    messages: tuple[StoredMessage, ...]

    def chat_messages(self) -> list[ChatMessage]:
        """The turns to give the model as context when resuming.

        Failed replies and messages without text are left out, as the chat screen does.
        """
        return [
            ChatMessage(m.role, m.text)
            for m in self.messages
            if m.text.strip() and m.state != "failed"
        ]

    def context_used(self) -> int:
        """The context the conversation filled when its latest counted reply ended (0: none)."""
        counted = (m.context_used for m in reversed(self.messages) if m.context_used is not None)
        return next(counted, 0)


def derive_title(first_user_text: str | None) -> str:
    """A one-line title from the first user message, shortened to `TITLE_MAX` characters."""
    text = " ".join((first_user_text or "").split())
    if not text:
        return UNTITLED
    return text if len(text) <= TITLE_MAX else text[: TITLE_MAX - 1].rstrip() + "…"
