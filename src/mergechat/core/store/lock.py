"""`ConversationLocks`: one writer per conversation, across mergechat processes.

Each held conversation has a lock file ``<data dir>/locks/conversation-<id>.lock`` with an
exclusive ``flock``; the kernel drops it when its process ends, so a crashed owner never keeps a
conversation locked. The file holds the owner's pid, to say who has it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system: no cross-process locking
    fcntl = None  # type: ignore[assignment]

from mergechat.core.settings import locations


class ConversationLocks:
    """The conversations this process writes to; `acquire` fails for one another process holds."""

    def __init__(self, folder: Path) -> None:
        """Keep the lock files in ``folder`` (created, private, when first needed)."""
        self.folder = folder
        self._held: dict[int, int] = {}

    @classmethod
    def beside(cls, database: Path) -> ConversationLocks:
        """The locks for the history database at ``database`` (a ``locks`` folder next to it)."""
        return cls(database.parent / "locks")

    def holds(self, conv_id: int) -> bool:
        """True when this process holds ``conv_id``."""
        return conv_id in self._held

    def acquire(self, conv_id: int) -> int | None:
        """Take ``conv_id``; None on success, else the owner's pid (0 when it cannot be read).

        A lock that cannot be taken for another reason (no folder, no locking here) counts as
        taken: history must not stop because of its locks.
        """
        if conv_id in self._held or fcntl is None:
            return None
        path = self._path(conv_id)
        try:
            locations.ensure_private_dir(self.folder)
        except OSError:
            return None
        for _ in range(3):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_pid(fd)
                os.close(fd)
                return owner
            except OSError:
                os.close(fd)
                return None
            # The previous owner may have removed the file between our open and our lock.
            if _same_file(fd, path):
                _write_pid(fd)
                self._held[conv_id] = fd
                return None
            os.close(fd)
        return None

    def release(self, conv_id: int) -> None:
        """Let ``conv_id`` go (removing its lock file); unknown ids are ignored."""
        fd = self._held.pop(conv_id, None)
        if fd is None:
            return
        # Remove while still locked, so no one else locks a file that is about to vanish.
        with contextlib.suppress(OSError):
            self._path(conv_id).unlink()
        os.close(fd)

    def release_all(self) -> None:
        """Let every held conversation go."""
        for conv_id in list(self._held):
            self.release(conv_id)

    def _path(self, conv_id: int) -> Path:
        return self.folder / f"conversation-{conv_id}.lock"


def _same_file(fd: int, path: Path) -> bool:
    try:
        held, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


def _read_pid(fd: int) -> int:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def _write_pid(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
