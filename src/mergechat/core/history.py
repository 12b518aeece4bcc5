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
from typing import Final

from mergechat.core import locations
from mergechat.core.api import GenerationSettings, ReplyStats, Role
from mergechat.core.history_schema import SchemaTooNewError, migrate
from mergechat.core.history_types import (
    MESSAGE_STATES,
    ROLES,
    Conversation,
    ConversationSummary,
    HistoryUnavailable,
    MessageState,
    StoredMessage,
    UnknownConversation,
    derive_title,
    normalize_model_path,
)
from mergechat.core.reply_recorder import ReplyRecorder

__all__ = [
    "Conversation",
    "ConversationSummary",
    "HistoryStore",
    "HistoryUnavailable",
    "MessageState",
    "ReplyRecorder",
    "StoredMessage",
    "UnknownConversation",
    "default_path",
]


def default_path() -> Path:
    """``<data dir>/history.sqlite3``."""
    return locations.history_file()


_MESSAGE_COLUMNS: Final = (
    "id, conversation_id, role, text, created, state, model_path, device, dtype, params_json, "
    "prompt_tokens, new_tokens, tokens_per_s, ttft_s, total_s, context_used, context_max, "
    "finish_reason, error"
)


def _message(row: sqlite3.Row) -> StoredMessage:
    values = dict(row)
    params = values.pop("params_json")
    return StoredMessage(**values, params=json.loads(params) if params else None)


class HistoryStore:
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
        conn: sqlite3.Connection | None = None
        try:
            locations.ensure_private_dir(db.parent)
            _create_private(db)
            conn = sqlite3.connect(
                db, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL survives any application crash; only power loss may drop the tail.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn)
        except (sqlite3.Error, OSError, SchemaTooNewError) as exc:
            if conn is not None:
                conn.close()
            raise _unavailable(db, exc) from exc
        return cls(conn, db)

    # -- writes -----------------------------------------------------------------------------------
    def new_conversation(self, model_path: str | os.PathLike[str] | None) -> int:
        """Create an empty conversation for ``model_path``; return its id."""
        now = time.time()
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO conversations (title, model_path, created, updated) "
                "VALUES (NULL, ?, ?, ?)",
                (normalize_model_path(model_path), now, now),
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
        self,
        message_id: int,
        text: str,
        state: MessageState,
        *,
        stats: ReplyStats | None = None,
        settings: GenerationSettings | None = None,
        model_path: str | os.PathLike[str] | None = None,
        finish_reason: str | None = None,
        error: str | None = None,
    ) -> bool:
        """Set a message's text and state (and, when given, what produced it); commit.

        Returns False when the message no longer exists (its conversation was deleted).
        """
        if state not in MESSAGE_STATES:
            raise ValueError(f"bad state {state!r}")
        values: dict[str, object] = {"text": text, "state": state}
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
        if settings is not None:
            values["params_json"] = json.dumps(dataclasses.asdict(settings), sort_keys=True)
        if model_path is not None:
            values["model_path"] = normalize_model_path(model_path)
        if finish_reason is not None:
            values["finish_reason"] = finish_reason
        if error is not None:
            values["error"] = error
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
            cur = conn.execute("UPDATE conversations SET title = ? WHERE id = ?", (clean, conv_id))
            if cur.rowcount == 0:
                raise UnknownConversation(conv_id)

    def delete(self, conv_id: int) -> None:
        """Delete a conversation and its messages."""
        with self._write() as conn:
            if conn.execute("DELETE FROM conversations WHERE id = ?", (conv_id,)).rowcount == 0:
                raise UnknownConversation(conv_id)

    def delete_message(self, message_id: int) -> None:
        """Delete one message (a reply being regenerated); unknown ids are ignored."""
        with self._write() as conn:
            conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    # -- reads ------------------------------------------------------------------------------------
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
                (conv_id,),
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
        with self._read() as conn:
            row = conn.execute(
                "SELECT id FROM conversations WHERE model_path = ? "
                "ORDER BY updated DESC, id DESC LIMIT 1",
                (normalize_model_path(model_path),),
            ).fetchone()
        return None if row is None else int(row["id"])

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
        cur = conn.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conv_id))
        if cur.rowcount == 0:
            raise UnknownConversation(conv_id)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._require_open()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise _unavailable(self.path, exc) from exc

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
                        _rollback(conn)
                    raise
                if conn.in_transaction:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(conn)
                raise _unavailable(self.path, exc) from exc

    def _require_open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise HistoryUnavailable("the history database is closed")
        return self._conn


def _create_private(db: Path) -> None:
    """Create the database file, if new, with mode 0600 whatever the umask.

    SQLite gives the -wal and -shm files the database's mode. An existing file keeps its mode.
    """
    try:
        fd = os.open(db, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _rollback(conn: sqlite3.Connection) -> None:
    # Never let a failing rollback (a closed connection) hide the error that caused it.
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _unavailable(path: Path, exc: BaseException) -> HistoryUnavailable:
    """Turn a low-level failure into one message with a hint that says what to do."""
    detail = str(exc) or type(exc).__name__
    hint: str | None = None
    if isinstance(exc, sqlite3.OperationalError) and "locked" in detail:
        hint = "another program holds a lock on it; close it, then restart mergechat"
    elif isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        hint = f"the file is damaged; move it aside (mv '{path}' '{path}.broken') to start afresh"
    elif isinstance(exc, SchemaTooNewError):
        hint = "use the newer mergechat, or move the file aside to start afresh"
    elif isinstance(exc, OSError):
        hint = "check that the data directory exists and is writable (or set MERGECHAT_DATA_DIR)"
    return HistoryUnavailable(f"cannot use the history database {path}: {detail}", hint)
