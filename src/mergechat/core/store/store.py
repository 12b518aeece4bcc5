"""Conversation history: a small SQLite store (WAL mode, every write committed at once)."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mergechat.core.api import Role
from mergechat.core.model.target import model_key
from mergechat.core.settings import locations
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.db import (
    connect_read_only,
    connect_writable,
    rollback,
    unavailable,
)
from mergechat.core.store.reads import HistoryReads, check_id
from mergechat.core.store.records import (
    MESSAGE_STATES,
    ROLES,
    Conversation,
    ConversationSummary,
    HistoryUnavailable,
    MessageState,
    ReplyDetails,
    StoredMessage,
    UnknownConversation,
)
from mergechat.core.store.schema import LATEST_VERSION

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "Conversation",
    "ConversationSummary",
    "HistoryStore",
    "HistoryUnavailable",
    "MessageState",
    "StoredMessage",
    "UnknownConversation",
    "default_path",
]


def default_path() -> Path:
    """``<data dir>/history.sqlite3``."""
    return locations.history_file()


class HistoryStore(HistoryReads):
    """The conversation store. Every write commits at once; use it from one thread at a time."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        """Wrap an open, migrated connection; use `HistoryStore.open` instead."""
        self._conn: sqlite3.Connection | None = conn
        self.path = path
        self._lock = threading.RLock()

    @classmethod
    def open(
        cls, path: str | os.PathLike[str] | None = None, *, busy_timeout_s: float = 2.0
    ) -> HistoryStore:
        """Open (creating and migrating as needed) the store at ``path`` (default `default_path`).

        Raises `HistoryUnavailable` with a clear message when the file is locked, corrupt, from a
        newer mergechat, or cannot be created.
        """
        db = Path(path) if path is not None else default_path()
        return cls(connect_writable(db, busy_timeout_s), db)

    @classmethod
    def open_read_only(
        cls, path: str | os.PathLike[str] | None = None, *, busy_timeout_s: float = 2.0
    ) -> HistoryStore:
        """Open an existing store for reading only: it works on a read-only file or a full disk.

        A store from an older mergechat is upgraded first (that needs write access). Writes
        through the result fail with `HistoryUnavailable`.
        """
        db = Path(path) if path is not None else default_path()
        conn, version = connect_read_only(db, busy_timeout_s)
        if version < LATEST_VERSION:
            conn.close()
            return cls.open(db, busy_timeout_s=busy_timeout_s)
        return cls(conn, db)

    # -- writes -----------------------------------------------------------------------------------
    def new_conversation(self, model_path: str | os.PathLike[str] | None) -> int:
        """Create an empty conversation for ``model_path``; return its id."""
        now = time.time()
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO conversations (title, model_path, created, updated) "
                "VALUES (NULL, ?, ?, ?)",
                (model_key(model_path), now, now),
            )
            return int(cur.lastrowid or 0)

    def add_message(
        self, conv_id: int, role: Role, text: str, state: MessageState = "complete"
    ) -> int:
        """Append a message and commit; return its id. Raises `UnknownConversation`."""
        if role not in ROLES or state not in MESSAGE_STATES:
            raise ValueError(f"bad role {role!r} or state {state!r}")
        now = time.time()
        with self._write() as conn:
            self._touch(conn, conv_id, now)
            cur = conn.execute(
                "INSERT INTO messages (conversation_id, role, text, created, state) "
                "VALUES (?,?,?,?,?)",
                (conv_id, role, text, now, state),
            )
            return int(cur.lastrowid or 0)

    def update_reply(
        self, message_id: int, text: str, state: MessageState, **details: Unpack[ReplyDetails]
    ) -> bool:
        """Set a message's text and state (and, when given, what produced it); commit.

        Returns False when the message no longer exists (its conversation was deleted).
        """
        if state not in MESSAGE_STATES:
            raise ValueError(f"bad state {state!r}")
        values: dict[str, object] = {"text": text, "state": state}
        stats = details.get("stats")
        if stats is not None:
            values.update(
                device=stats.device,
                dtype=stats.dtype,
                prompt_tokens=stats.prompt_tokens,
                new_tokens=stats.new_tokens,
                tokens_per_s=stats.decode_tokens_per_s,
                ttft_s=stats.ttft_s,
                total_s=stats.total_s,
                context_used=stats.context_used,
                context_max=stats.context_max,
            )
        values.update(_producer(details.get("settings"), details.get("model_path")))
        if (reason := details.get("finish_reason")) is not None:
            values["finish_reason"] = reason
        if (error := details.get("error")) is not None:
            values["error"] = error
        return self._update_message(message_id, values)

    def record_producer(
        self,
        message_id: int,
        *,
        settings: GenerationSettings | None = None,
        model_path: str | os.PathLike[str] | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ) -> bool:
        """Note what is producing a reply as it starts, so a reply cut off (quit, crash) still
        says which model, device, precision and parameters made it. False: no such message."""
        values = _producer(settings, model_path)
        values.update({k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None})
        return self._update_message(message_id, values) if values else True

    def set_last_opened_in_app(
        self, model_path: str | os.PathLike[str], conv_id: int | None
    ) -> None:
        """Note the conversation the app has open with ``model_path`` (None: a new, empty chat)."""
        with self._write() as conn:
            if (
                conv_id is not None
                and conn.execute(
                    "SELECT 1 FROM conversations WHERE id = ?", (check_id(conv_id),)
                ).fetchone()
                is None
            ):
                conv_id = None  # deleted meanwhile
            conn.execute(
                "INSERT INTO app_last_open (model_path, conversation_id, updated) VALUES (?,?,?) "
                "ON CONFLICT(model_path) DO UPDATE SET conversation_id = excluded.conversation_id, "
                "updated = excluded.updated",
                (model_key(model_path), conv_id, time.time()),
            )

    def _update_message(self, message_id: int, values: dict[str, object]) -> bool:
        assignments = ", ".join(f"{column} = ?" for column in values)
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE messages SET {assignments} WHERE id = ?", (*values.values(), message_id)
            )
            if cur.rowcount == 0:
                return False
            conn.execute(
                "UPDATE conversations SET updated = ? "
                "WHERE id = (SELECT conversation_id FROM messages WHERE id = ?)",
                (time.time(), message_id),
            )
        return True

    def rename(self, conv_id: int, title: str) -> None:
        """Set a conversation's title; an empty title goes back to the first message's."""
        clean = " ".join(title.split()) or None
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE conversations SET title = ? WHERE id = ?", (clean, check_id(conv_id))
            )
            if cur.rowcount == 0:
                raise UnknownConversation(conv_id)

    def delete(self, conv_id: int) -> None:
        """Delete a conversation and its messages."""
        with self._write() as conn:
            cur = conn.execute("DELETE FROM conversations WHERE id = ?", (check_id(conv_id),))
            if cur.rowcount == 0:
                raise UnknownConversation(conv_id)

    def delete_message(self, message_id: int) -> None:
        """Delete one message (a reply being regenerated); unknown ids are ignored."""
        with self._write() as conn:
            conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def close(self) -> None:
        """Close the database; further calls raise `HistoryUnavailable`. Safe to call twice."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------------
    @staticmethod
    def _touch(conn: sqlite3.Connection, conv_id: int, now: float) -> None:
        cur = conn.execute(
            "UPDATE conversations SET updated = ? WHERE id = ?", (now, check_id(conv_id))
        )
        if cur.rowcount == 0:
            raise UnknownConversation(conv_id)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._require_open()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise unavailable(self.path, exc) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction, committed on success and rolled back on any error.

        A write that starts while another one is open on this thread (a signal handler saving
        history interrupted it between two statements) joins that transaction and commits it:
        each write here leaves the store consistent after any of its statements, and such a
        handler is about to exit, which would otherwise roll everything back.
        """
        with self._lock:
            conn = self._require_open()
            nested = conn.in_transaction
            try:
                if not nested:
                    conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if not nested:
                        rollback(conn)
                    raise
                if conn.in_transaction:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                rollback(conn)
                raise unavailable(self.path, exc) from exc

    def _require_open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise HistoryUnavailable("the history database is closed")
        return self._conn


def _producer(
    settings: GenerationSettings | None, model_path: str | os.PathLike[str] | None
) -> dict[str, object]:
    """The message columns that say which parameters and model made a reply (those given)."""
    values: dict[str, object] = {}
    if settings is not None:
        values["params_json"] = json.dumps(dataclasses.asdict(settings), sort_keys=True)
    if model_path is not None:
        values["model_path"] = model_key(model_path)
    return values
