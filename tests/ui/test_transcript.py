"""A saved conversation shown again: footers by state, and whether its last reply can continue."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mergechat.core.store.records import Conversation, StoredMessage
from mergechat.ui.transcript import resumed_finish, stored_footer, transcript_widgets
from mergechat.ui.widgets.assistant_message import AssistantMessage
from mergechat.ui.widgets.conversation_view import UserMessage

USER = StoredMessage(1, 1, "user", "question", 0.0, "complete")
REPLY = StoredMessage(
    2,
    1,
    "assistant",
    "answer",
    1.0,
    "complete",
    device="cuda:0",
    dtype="bfloat16",
    prompt_tokens=12,
    new_tokens=40,
    tokens_per_s=31.25,
    ttft_s=0.2,
    total_s=1.5,
    context_used=52,
    context_max=4096,
    finish_reason="complete",
)


STATS = "40 tokens · 31.2 tok/s · TTFT 0.20 s · bfloat16 · cuda:0"


def conversation(*messages: StoredMessage) -> Conversation:
    return Conversation(1, "question", "/m", 0.0, 1.0, False, messages)


@pytest.mark.parametrize(
    ("changes", "footer"),
    [
        ({}, STATS),
        ({"finish_reason": "length"}, f"{STATS} · hit max_new_tokens"),
        ({"state": "stopped", "finish_reason": "stopped"}, f"{STATS} · stopped"),
        ({"state": "stopped", "new_tokens": None}, "stopped"),
        ({"state": "streaming", "new_tokens": None}, "interrupted (saved while it was streaming)"),
        ({"state": "failed", "error": "CUDA out of memory"}, "failed: CUDA out of memory"),
    ],
)
def test_footers_say_what_the_live_chat_said(changes: dict[str, object], footer: str) -> None:
    assert stored_footer(replace(REPLY, **changes)) == footer  # type: ignore[arg-type]


def test_only_a_cut_off_reply_with_text_can_be_continued() -> None:
    assert resumed_finish(conversation(USER, REPLY)) == "complete"
    assert resumed_finish(conversation(USER, replace(REPLY, finish_reason="length"))) == "length"
    assert resumed_finish(conversation(USER, replace(REPLY, state="streaming"))) == "stopped"
    assert resumed_finish(conversation(USER, replace(REPLY, state="failed"))) is None
    assert resumed_finish(conversation(USER, replace(REPLY, text=" "))) is None
    assert resumed_finish(conversation(USER)) is None
    assert resumed_finish(conversation()) is None


def test_widgets_in_order_with_failed_replies_shown() -> None:
    failed = replace(REPLY, id=3, state="failed", text="par", error="boom")
    widgets = transcript_widgets(conversation(USER, REPLY, failed))
    assert [type(w) for w in widgets] == [UserMessage, AssistantMessage, AssistantMessage]
    assert isinstance(widgets[0], UserMessage) and widgets[0].text == "question"
