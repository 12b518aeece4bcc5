"""The history database's schema: ordered migrations keyed by ``PRAGMA user_version``."""

from __future__ import annotations

import sqlite3
from typing import Final


def _add_columns(table: str, columns: str) -> str:
    """One ``ALTER TABLE ... ADD COLUMN`` a column (SQLite adds one column a statement)."""
    return "".join(f"ALTER TABLE {table} ADD COLUMN {c.strip()};\n" for c in columns.split(","))


#: Migration N (1-based) brings a database from user_version N-1 to N. Append only: never edit a
#: released step, since databases already at that version will not run it again.
MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: conversations and their messages. AUTOINCREMENT: an id is never reused after a delete,
    # so a recorder still holding a deleted message's id can never overwrite a newer message.
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT,
        model_path TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        text TEXT NOT NULL,
        created REAL NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('complete', 'stopped', 'failed', 'streaming'))
    );
    """,
    # 2: what produced each assistant reply, and how fast.
    _add_columns(
        "messages",
        "model_path TEXT, device TEXT, dtype TEXT, params_json TEXT, prompt_tokens INTEGER, "
        "new_tokens INTEGER, tokens_per_s REAL, ttft_s REAL",
    ),
    # 3: the rest of ReplyStats, why a reply ended, and indexes for the list and resume queries.
    _add_columns(
        "messages",
        "total_s REAL, context_used INTEGER, context_max INTEGER, finish_reason TEXT, error TEXT",
    )
    + """
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    CREATE INDEX conversations_by_model ON conversations(model_path, updated);
    CREATE INDEX conversations_by_updated ON conversations(updated);
    """,
    # 4: per model, the conversation the app last had open (NULL: a new, empty chat), so a
    # restart resumes that one rather than a one-shot exchange saved meanwhile.
    """
    CREATE TABLE app_last_open (
        model_path TEXT PRIMARY KEY,
        conversation_id INTEGER REFERENCES conversations(id) ON DELETE SET NULL,
        updated REAL NOT NULL
    );
    """,
)

LATEST_VERSION: Final[int] = len(MIGRATIONS)


class SchemaTooNewError(Exception):
    """The database was written by a newer mergechat whose schema this version does not know."""

    def __init__(self, found: int) -> None:
        super().__init__(
            f"the history database has schema version {found}; this mergechat knows up to "
            f"{LATEST_VERSION} (it was written by a newer mergechat)"
        )
        self.found = found


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's ``PRAGMA user_version`` (0 for a new, empty file)."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, target: int = LATEST_VERSION) -> int:
    """Apply the migrations after the current version up to ``target``; return the new version.

    Each step runs in its own transaction together with its ``user_version`` bump, so an
    interrupted upgrade leaves the database at a whole version. ``conn`` must be in autocommit
    mode (``isolation_level=None``). Raises `SchemaTooNewError` for a database from the future.
    """
    current = schema_version(conn)
    if current > LATEST_VERSION:
        raise SchemaTooNewError(current)
    for version in range(current + 1, target + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the write lock: another process may have migrated meanwhile.
            if schema_version(conn) >= version:
                conn.execute("COMMIT")
                continue
            for statement in _statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version:d}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return schema_version(conn)


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT first and leave the transaction; run statement by statement.
    return [part.strip() for part in script.split(";") if part.strip()]
