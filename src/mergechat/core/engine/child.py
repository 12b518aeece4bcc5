"""`EngineChild`: one engine process, its two pipes and the replies it has not ended yet.

`ProcessEngine` starts one on first use and a new one after a crash. The process's output goes
to its own ``engine-<pid>.log`` in the cache dir (several run at once in a comparison), never
to the terminal the app draws on; the newest few logs are kept.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO

import mergechat
from mergechat.core.client_commands import Command
from mergechat.core.engine.wire import RelayedStream
from mergechat.core.settings import locations

#: The engine process's stdout and stderr (library warnings, a crash's traceback).
LOG_NAME = "engine-{pid}.log"
#: How many engine logs stay in the cache dir (a comparison runs up to four processes).
KEEP_LOGS = 8
_LOG_FILE = re.compile(r"engine-\d+\.log")
_starting = itertools.count()


_MAIN = "from mergechat.core.engine.worker import main; main(sys.argv[1:])"


def _open_log(path: Path) -> IO[bytes]:
    """The engine's output file (truncated per process), or the null device if it cannot be."""
    try:
        locations.ensure_private_dir(path.parent)
        return open(path, "wb")
    except OSError:
        return open(os.devnull, "wb")


class EngineChild:
    """One engine process, its pipes, its reader thread and the replies it has not ended."""

    def __init__(self, probe_cache: Path | None, env: Mapping[str, str] | None = None) -> None:
        # Named once its pid is known: the log opens before the process starts.
        folder = locations.cache_dir()
        self.log_path = folder / f"engine-starting-{os.getpid()}-{next(_starting)}.log"
        # Appended to the engine's path, so it finds this very package only when nothing else
        # would (a source checkout run without installing).
        source = str(Path(mergechat.__file__).resolve().parent.parent)
        boot = f"import sys; sys.path.append({source!r}); {_MAIN}"
        cmd_read, cmd_write = os.pipe()
        event_read, event_write = os.pipe()
        args = [str(cmd_read), str(event_write), str(probe_cache or "")]
        try:
            with _open_log(self.log_path) as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-c", boot, *args],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(cmd_read, event_write),
                    env={**os.environ, **env} if env else None,
                    # Keys like ctrl+c in the terminal are the app's, not signals for the engine.
                    start_new_session=True,
                )
        except BaseException:
            os.close(cmd_write)
            os.close(event_read)
            raise
        finally:
            os.close(cmd_read)
            os.close(event_write)
        self.log_path = _named_log(self.log_path, folder / LOG_NAME.format(pid=self.process.pid))
        prune_logs(folder, KEEP_LOGS)
        self.commands = Connection(cmd_write, readable=False)
        self.events = Connection(event_read, writable=False)
        self.send_lock = threading.Lock()
        #: Replies asked for and not ended: request id -> its stream once started.
        self.open: dict[int, RelayedStream | None] = {}
        self.dead = False
        self.closing = False
        self.reader: threading.Thread | None = None

    def send(self, command: Command) -> None:
        """Send ``command``; a dead process is noticed by the reader, not here."""
        try:
            with self.send_lock:
                self.commands.send(command)
        except OSError:
            pass

    def how_it_ended(self) -> str:
        """The exit status in words, plus the log's last error line when there is one."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            how = f"killed by {name}"
            if -code == signal.SIGKILL:
                how += " (out of memory?)"
        else:
            how = f"exited with status {code}"
        last = _last_error_line(self.log_path)
        return f"{how}: {last}" if last else how


def _named_log(path: Path, target: Path) -> Path:
    """``path`` renamed to ``target`` (the process keeps writing to it); ``path`` if it cannot."""
    try:
        path.rename(target)
    except OSError:
        return path
    return target


def prune_logs(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest ``engine-<pid>.log`` files in ``folder``."""
    try:
        logs = [p for p in folder.iterdir() if _LOG_FILE.fullmatch(p.name)]
        logs.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in logs[keep:]:
        with contextlib.suppress(OSError):  # another app pruned it, or it is not ours to delete
            old.unlink()


def _last_error_line(path: Path) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 8192))
            tail = log.read().decode("utf-8", "replace")
    except OSError:
        return ""
    for line in reversed(tail.splitlines()):
        text = line.strip()
        if text.startswith("Fatal Python error") or "Error:" in text or "error:" in text:
            return text[:200]
    return ""
