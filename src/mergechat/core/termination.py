"""Ending a run cleanly on SIGHUP (a dropped SSH session) or SIGTERM (``kill``)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any, NoReturn, TextIO


def termination_signals() -> list[int]:
    """SIGHUP and SIGTERM, as far as this platform has them (Windows has no SIGHUP)."""
    names = ("SIGHUP", "SIGTERM")
    return [int(getattr(signal, name)) for name in names if hasattr(signal, name)]


class Terminated(BaseException):
    """SIGHUP or SIGTERM arrived: the run ends with exit code 128 + ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def terminate_on_signals(before_exit: Callable[[], None]) -> Iterator[None]:
    """Within the block, SIGHUP and SIGTERM call ``before_exit`` then raise `Terminated`.

    Without it a dropped SSH session or ``kill`` would end the process at once, before the
    streaming reply is saved. Only the main thread can take signals; elsewhere this does nothing.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        before_exit()
        raise Terminated(signum)

    previous: dict[int, Any] = {}
    for signum in termination_signals():
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread
            break
    try:
        yield
    finally:
        for signum, old in previous.items():
            # None: the old handler was not installed from Python; the default is the best guess.
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGHUP/SIGTERM until the block ends, so a handler never sees half-done bookkeeping.

    Used around "write to stdout, then remember what was written": a signal between the two
    would make the saved reply differ from what the user saw. No-op off the main thread or
    where ``pthread_sigmask`` does not exist.
    """
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = set(termination_signals())
    previous = mask(signal.SIG_BLOCK, signums)
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, previous)


def add_loop_handlers(loop: asyncio.AbstractEventLoop, handler: Callable[[int], None]) -> list[int]:
    """Have ``loop`` call ``handler(signum)`` on SIGHUP and SIGTERM; return the signals taken.

    Returns [] where the loop cannot take signals (Windows, or not the main thread).
    """
    taken: list[int] = []
    for signum in termination_signals():
        try:
            loop.add_signal_handler(signum, handler, signum)
        except (NotImplementedError, RuntimeError, ValueError):
            break
        taken.append(signum)
    return taken


def remove_loop_handlers(loop: asyncio.AbstractEventLoop, signums: list[int]) -> None:
    """Undo `add_loop_handlers` (the default actions apply again)."""
    for signum in signums:
        with suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signum)


def signal_exit_code(code: int) -> bool:
    """True when ``code`` is the exit code of a run ended by SIGHUP or SIGTERM (128 + N)."""
    return code - 128 in termination_signals()


def end_process(code: int) -> NoReturn:
    """Flush stdout and stderr, then end the process without interpreter shutdown: an engine
    thread still inside a torch operation would otherwise abort it during finalization."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a hung-up terminal or a closed stream
            stream.flush()
    os._exit(code)


def exit_watchdog(seconds: float, code: int) -> threading.Timer:
    """Start a timer that ends the process with ``code`` unless cancelled within ``seconds``.

    After a hang-up the terminal is gone: restoring it can block forever on a full output
    queue, and the process would linger. The caller cancels the timer once it has exited.
    Before it ends the process, the timer puts the terminal back in line mode (`restore_terminal`,
    which never blocks), since the app did not get to.
    """
    timer = threading.Timer(seconds, _exit_now, args=(code,))
    timer.daemon = True
    timer.start()
    return timer


def _exit_now(code: int) -> None:
    restore_terminal()
    os._exit(code)


#: Turns off what a full-screen app turns on: the alternate screen, the hidden cursor, mouse
#: reporting, bracketed paste, focus events and the kitty keyboard protocol.
RESET_SEQUENCE = (
    "\x1b[<u\x1b[?1000l\x1b[?1003l\x1b[?1015l\x1b[?1006l\x1b[?2004l\x1b[?1004l\x1b[?1049l\x1b[?25h"
)


def restore_terminal(in_fd: int | None = None, out_fd: int | None = None) -> None:
    """Best effort and never blocking: line mode back on ``in_fd``, `RESET_SEQUENCE` to ``out_fd``.

    The defaults are the process's stdin and stderr (where Textual draws), when they are
    terminals. Errors (a terminal that hung up, a full output queue) are ignored. ``out_fd`` is
    left non-blocking: this is for the moment before the process ends.
    """
    try:
        import termios
    except ImportError:  # Windows: no termios, and the console is not left in raw mode
        return
    in_fd = _tty_fd(sys.__stdin__) if in_fd is None else in_fd
    out_fd = _tty_fd(sys.__stderr__) if out_fd is None else out_fd
    if in_fd is not None:
        with suppress(OSError, termios.error):
            attrs = termios.tcgetattr(in_fd)
            # The bits raw mode clears (Textual's and tty.setraw's): echo, line editing, ^C
            # signals, CR as Enter and XON/XOFF. TCSANOW: no waiting for output to drain.
            attrs[0] |= termios.ICRNL | termios.IXON
            attrs[3] |= termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG
            termios.tcsetattr(in_fd, termios.TCSANOW, attrs)
    if out_fd is not None:
        with suppress(OSError):
            os.set_blocking(out_fd, False)
            os.write(out_fd, RESET_SEQUENCE.encode())


def _tty_fd(stream: TextIO | None) -> int | None:
    with suppress(AttributeError, OSError, ValueError):
        if stream is not None and stream.isatty():
            return stream.fileno()
    return None
