"""A saved conversation as chat widgets: each reply with the footer it had when it streamed."""

from __future__ import annotations

from typing import cast

from textual.widget import Widget

from mergechat.core.api import FinishReason, ReplyStats
from mergechat.core.dtypes import DType
from mergechat.core.store.records import Conversation, StoredMessage
from mergechat.ui.widgets.assistant_message import AssistantMessage, format_footer
from mergechat.ui.widgets.conversation_view import ConversationView, UserMessage

#: Footers of replies saved without stats, by state.
_NO_STATS: dict[str, str] = {
    "stopped": "stopped",
    "streaming": "interrupted (saved while it was streaming)",
    "complete": "",
}


def stored_stats(message: StoredMessage) -> ReplyStats | None:
    """The reply's stats as the engine reported them; None when they were not all saved."""
    values = (
        message.prompt_tokens,
        message.new_tokens,
        message.ttft_s,
        message.total_s,
        message.tokens_per_s,
        message.context_used,
        message.context_max,
        message.dtype,
        message.device,
    )
    if any(value is None for value in values):
        return None
    return ReplyStats(
        prompt_tokens=cast(int, message.prompt_tokens),
        new_tokens=cast(int, message.new_tokens),
        ttft_s=cast(float, message.ttft_s),
        total_s=cast(float, message.total_s),
        decode_tokens_per_s=cast(float, message.tokens_per_s),
        context_used=cast(int, message.context_used),
        context_max=cast(int, message.context_max),
        dtype=cast(DType, message.dtype),
        device=cast(str, message.device),
    )


def stored_finish(message: StoredMessage) -> FinishReason:
    """How a saved (not failed) reply ended, as the engine would say it."""
    if message.state in ("stopped", "streaming"):
        return "stopped"
    return "length" if message.finish_reason == "length" else "complete"


def stored_footer(message: StoredMessage) -> str:
    """The footer line of a saved reply: its stats and ending, as shown when it finished."""
    if message.state == "failed":
        return f"failed: {message.error or 'unknown error'}"
    stats = stored_stats(message)
    if stats is None:
        return _NO_STATS.get(message.state, "")
    return format_footer(stats, stored_finish(message))


def resumed_finish(conversation: Conversation) -> FinishReason | None:
    """How the conversation's last reply ended (None: it ends with a user turn or a failure).

    This decides whether the reply can be continued after the conversation is reopened.
    """
    last = conversation.messages[-1] if conversation.messages else None
    if last is None or last.role != "assistant" or last.state == "failed":
        return None
    if not last.text.strip():
        return None  # left out of the model's context, as the chat does
    return stored_finish(last)


def transcript_widgets(conversation: Conversation) -> list[Widget]:
    """One widget per saved message, oldest first (system messages are not shown)."""
    widgets: list[Widget] = []
    for message in conversation.messages:
        if message.role == "user":
            widgets.append(UserMessage(message.text))
        elif message.role == "assistant":
            widgets.append(AssistantMessage(message.text, footer=stored_footer(message)))
    return widgets


def show_transcript(view: ConversationView, conversation: Conversation | None) -> None:
    """Replace what ``view`` shows with ``conversation`` (None: nothing), scrolled to its end.

    Not awaited on purpose: the removal and the mount are ordered at once, so a message sent
    right afterwards is added after them.
    """
    view.remove_children()
    if conversation is not None:
        view.mount_all(transcript_widgets(conversation))
    view.call_after_refresh(view.scroll_end, animate=False)
