"""Ending a run cleanly on SIGHUP (a dropped SSH session) or SIGTERM (``kill``)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any


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


def exit_watchdog(seconds: float, code: int) -> threading.Timer:
    """Start a timer that ends the process with ``code`` unless cancelled within ``seconds``.

    After a hang-up the terminal is gone: restoring it can block forever on a full output
    queue, and the process would linger. The caller cancels the timer once it has exited.
    """
    timer = threading.Timer(seconds, os._exit, args=(code,))
    timer.daemon = True
    timer.start()
    return timer
