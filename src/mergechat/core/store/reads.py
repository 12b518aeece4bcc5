"""The history store's queries: the list, one conversation, and which one to resume."""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import AbstractContextManager
from typing import Any, Final

from mergechat.core.model.target import model_key
from mergechat.core.store.db import MAX_ID
from mergechat.core.store.records import (
    Conversation,
    ConversationSummary,
    StoredMessage,
    UnknownConversation,
    derive_title,
)

_MESSAGE_COLUMNS: Final = (
    "id, conversation_id, role, text, created, state, model_path, device, dtype, params_json, "
    "prompt_tokens, new_tokens, tokens_per_s, ttft_s, total_s, context_used, context_max, "
    "finish_reason, error"
)


def check_id(conv_id: int) -> int:
    """``conv_id`` when SQLite can hold it; otherwise it names no conversation."""
    if not 0 < conv_id <= MAX_ID:
        raise UnknownConversation(conv_id)
    return conv_id


def _params(text: str | None) -> dict[str, Any] | None:
    # Damaged parameters are left out rather than hiding the whole conversation.
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _message(row: sqlite3.Row) -> StoredMessage:
    values = dict(row)
    params = values.pop("params_json")
    return StoredMessage(**values, params=_params(params))


class HistoryReads:
    """Read queries; the store supplies ``_read`` (its lock, and errors as `HistoryUnavailable`)."""

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _one(self, sql: str, params: tuple[object, ...]) -> sqlite3.Row | None:
        """The first row of one query (None when there is none)."""
        with self._read() as conn:
            row: sqlite3.Row | None = conn.execute(sql, params).fetchone()
        return row

    def list_conversations(self) -> list[ConversationSummary]:
        """All conversations, most recently updated first, with their message counts."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT c.id, c.title, c.model_path, c.created, c.updated, "
                "(SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS n, "
                "(SELECT substr(text, 1, 500) FROM messages m WHERE m.conversation_id = c.id "
                " AND m.role = 'user' ORDER BY m.id LIMIT 1) AS first_user "
                "FROM conversations c ORDER BY c.updated DESC, c.id DESC"
            ).fetchall()
        return [
            ConversationSummary(
                id=r["id"],
                title=r["title"] or derive_title(r["first_user"]),
                model_path=r["model_path"],
                created=r["created"],
                updated=r["updated"],
                message_count=r["n"],
                renamed=r["title"] is not None,
            )
            for r in rows
        ]

    def get_conversation(self, conv_id: int) -> Conversation:
        """A conversation with its messages. Raises `UnknownConversation`."""
        with self._read() as conn:
            head = conn.execute(
                "SELECT id, title, model_path, created, updated FROM conversations WHERE id = ?",
                (check_id(conv_id),),
            ).fetchone()
            if head is None:
                raise UnknownConversation(conv_id)
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY id",
                (conv_id,),
            ).fetchall()
        messages = tuple(_message(r) for r in rows)
        first_user = next((m.text for m in messages if m.role == "user"), None)
        return Conversation(
            id=head["id"],
            title=head["title"] or derive_title(first_user),
            model_path=head["model_path"],
            created=head["created"],
            updated=head["updated"],
            renamed=head["title"] is not None,
            messages=messages,
        )

    def last_conversation_for_model(self, model_path: str | os.PathLike[str]) -> int | None:
        """The id of the most recently updated conversation with ``model_path``, if any."""
        row = self._one(
            "SELECT id FROM conversations WHERE model_path = ? "
            "ORDER BY updated DESC, id DESC LIMIT 1",
            (model_key(model_path),),
        )
        return None if row is None else int(row["id"])

    def last_opened_in_app(self, model_path: str | os.PathLike[str]) -> tuple[bool, int | None]:
        """What the app last had open with ``model_path``: (known, conversation id or None).

        ``(True, None)`` means a new, still empty chat (or a conversation deleted since);
        ``(False, None)`` that the app never noted one for this model.
        """
        row = self._one(
            "SELECT conversation_id FROM app_last_open WHERE model_path = ?",
            (model_key(model_path),),
        )
        if row is None:
            return False, None
        value = row["conversation_id"]
        return True, None if value is None else int(value)
