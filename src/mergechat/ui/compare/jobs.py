"""`RunnerJobs`: the blocking `CompareRunner` calls (prepare, ask, switch, close) run one after
the other on one Textual thread worker, so the UI thread never waits for a model; what the
runner reports reaches the app as messages (``post_message`` is thread-safe)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from textual.app import App
from textual.message import Message

from mergechat.core.compare.events import CompareEvent
from mergechat.core.errors import MergechatError

Job = Callable[[], object]


class CompareEventMessage(Message):
    """One event of the runner, posted from the worker thread."""

    def __init__(self, event: CompareEvent) -> None:
        super().__init__()
        self.event = event


class JobDone(Message):
    """A job ended; ``error`` says why it failed (None: it ran to its end)."""

    def __init__(self, kind: str, error: str | None) -> None:
        super().__init__()
        self.kind = kind
        self.error = error


class RunnerJobs:
    """A queue of jobs and the one worker that runs them in order."""

    def __init__(self, app: App[Any]) -> None:
        self._app = app
        self._queue: queue.SimpleQueue[tuple[str, Job] | None] = queue.SimpleQueue()
        #: The kinds of the jobs queued or running, oldest first (UI thread only).
        self.pending: list[str] = []
        self._finished = False
        #: Set when the worker has run its last job and ended.
        self.ended = threading.Event()

    def start(self) -> None:
        """Start the worker (after the first frame)."""
        self._app.run_worker(
            self._loop, name="compare-runner", group="compare", thread=True, exit_on_error=False
        )

    def submit(self, kind: str, job: Job) -> None:
        """Run ``job`` after the jobs already queued (nothing once `finish` was called)."""
        if not self._finished:
            self.pending.append(kind)
            self._queue.put((kind, job))

    def busy(self, kind: str | None = None) -> bool:
        """True while a job (of ``kind``) is queued or running."""
        return kind in self.pending if kind is not None else bool(self.pending)

    def done(self, kind: str) -> None:
        """The oldest job of ``kind`` ended (the app calls this on `JobDone`)."""
        if kind in self.pending:
            self.pending.remove(kind)

    def finish(self) -> None:
        """Take no more jobs; the worker ends once the queued ones have run."""
        if not self._finished:
            self._finished = True
            self._queue.put(None)

    def post(self, event: CompareEvent) -> None:
        """The runner's ``on_event``: called on the worker thread."""
        self._app.post_message(CompareEventMessage(event))

    def _loop(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                kind, job = item
                error = None
                try:
                    job()
                except MergechatError as exc:
                    error = str(exc)
                except Exception as exc:  # one failed job must not end the worker others need
                    error = f"{type(exc).__name__}: {exc}"
                self._app.post_message(JobDone(kind, error))
        finally:
            self.ended.set()
