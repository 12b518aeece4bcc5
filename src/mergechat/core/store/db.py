"""Opening the history database for writing or read-only; failures as one clear message."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Final

from mergechat.core.settings import locations
from mergechat.core.store.records import HistoryUnavailable
from mergechat.core.store.schema import SchemaTooNewError, migrate

#: The largest id SQLite can store; a bigger one names no conversation.
MAX_ID: Final = 2**63 - 1


def decode_text(raw: bytes) -> str:
    """SQLite text as str, undecodable bytes replaced: one damaged byte never hides a message."""
    return raw.decode("utf-8", errors="replace")


def _configure(conn: sqlite3.Connection) -> None:
    conn.row_factory = sqlite3.Row
    conn.text_factory = decode_text


def connect_writable(db: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """Create (mode 0600) and migrate the database; WAL mode. Raises `HistoryUnavailable`."""
    conn: sqlite3.Connection | None = None
    try:
        locations.ensure_private_dir(db.parent)
        _create_private(db)
        conn = sqlite3.connect(
            db, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        _configure(conn)
        conn.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL survives any application crash; only power loss may drop the tail.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except (sqlite3.Error, OSError, SchemaTooNewError) as exc:
        if conn is not None:
            conn.close()
        raise unavailable(db, exc) from exc
    return conn


def connect_read_only(db: Path, busy_timeout_s: float) -> tuple[sqlite3.Connection, int]:
    """Open an existing database without writing anything (a read-only file or a full disk).

    Returns the connection and its schema version. A WAL database whose folder cannot take the
    shared-memory file is read as immutable (what is in the file itself). Raises
    `HistoryUnavailable`.
    """
    uri = db.absolute().as_uri() + "?mode=ro"
    last: sqlite3.Error | None = None
    for suffix in ("", "&immutable=1"):
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                uri + suffix,
                uri=True,
                timeout=busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            _configure(conn)
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            last = exc
            if conn is not None:
                conn.close()
            continue
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise unavailable(db, exc) from exc
        return conn, version
    assert last is not None
    raise unavailable(db, last) from last


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


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back, never letting a failing rollback (a closed connection) hide the first error."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def unavailable(path: Path, exc: BaseException) -> HistoryUnavailable:
    """Turn a low-level failure into one message with a hint that says what to do."""
    detail = str(exc) or type(exc).__name__
    hint: str | None = None
    if isinstance(exc, sqlite3.OperationalError) and "locked" in detail:
        hint = "another program holds a lock on it; close it, then restart mergechat"
    elif isinstance(exc, sqlite3.OperationalError) and ("readonly" in detail or "full" in detail):
        hint = "mergechat history list/show/export still read it; free space or fix its permissions"
    elif isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        hint = f"the file is damaged; move it aside (mv '{path}' '{path}.broken') to start afresh"
    elif isinstance(exc, SchemaTooNewError):
        hint = "use the newer mergechat, or move the file aside to start afresh"
    elif isinstance(exc, OSError):
        hint = "check that the data directory exists and is writable (or set MERGECHAT_DATA_DIR)"
    return HistoryUnavailable(f"cannot use the history database {path}: {detail}", hint)
