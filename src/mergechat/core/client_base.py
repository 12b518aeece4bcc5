"""What every `EngineClient` keeps the same way: its reply ids, cancels, state and queue.

The thread `Engine`, the `ProcessEngine`, the remote client and the forwarding clients (routing,
the UI's deferred engine) all answer the one contract in `mergechat.core.api`; the bookkeeping
they share lives here once (the commands themselves are in `client_commands`).
"""

from __future__ import annotations

import itertools
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from mergechat.core import client_commands as cmd
from mergechat.core.api import (
    ChatMessage,
    EngineEvent,
    EventSink,
    LoadFailed,
    LoadRequest,
    ModelLoaded,
    ModelState,
    ReplyFinished,
    ReplyStarted,
    ReplyStats,
    SwitchFailed,
    SwitchFinished,
)
from mergechat.core.dtypes import DType
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.streaming import ReplyStream


def _no_text(_ids: object) -> str:
    return ""


def answer_skipped(
    sink: EventSink, request_id: int, context_max: int, dtype: DType, device: str
) -> None:
    """Answer a reply cancelled before it started: an empty, stopped reply."""
    stream = ReplyStream(_no_text)
    stream.close()
    sink(ReplyStarted(request_id, stream, 0, context_max))
    stats = ReplyStats(0, 0, 0.0, 0.0, 0.0, 0, context_max, dtype, device)
    sink(ReplyFinished(request_id, "", stats, "stopped"))


class RequestIds:
    """Hands out reply request ids and remembers up to which one the last cancel reached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._last = 0
        self._cancelled_upto = 0
        #: Set by `cancel`: the running reply stops at its next token.
        self.stop = threading.Event()

    def new(self) -> int:
        """The next request id."""
        with self._lock:
            self._last = next(self._ids)
            return self._last

    def cancel(self) -> None:
        """Cancel every reply asked for so far: the running one and those still queued."""
        with self._lock:
            self._cancelled_upto = self._last
            self.stop.set()

    def cancelled(self, request_id: int) -> bool:
        """True once a cancel came after ``request_id`` was handed out."""
        with self._lock:
            return request_id <= self._cancelled_upto

    def begin(self, request_id: int) -> bool:
        """False if ``request_id`` was cancelled before it started; else clear `stop` for it."""
        with self._lock:
            if request_id <= self._cancelled_upto:
                return False
            self.stop.clear()
            return True


class ClientBase(ABC):
    """The `EngineClient` calls spelled once: each becomes a command that `_submit` carries."""

    def __init__(self) -> None:
        self._ids = RequestIds()

    @abstractmethod
    def start(self) -> None:
        """Start what runs the commands (idempotent)."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop the running reply at its next token and drop every reply queued so far."""

    @abstractmethod
    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop any reply and whatever runs the commands."""

    @abstractmethod
    def _submit(self, command: cmd.Command) -> None:
        """Carry ``command`` to whatever runs it; returns at once."""

    def load(self, request: LoadRequest) -> None:
        """Queue a model load; answers LoadProgress..., then ModelLoaded or LoadFailed."""
        self._submit(cmd.LoadCommand(request))

    def generate(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        *,
        continue_last: bool = False,
    ) -> int:
        """Queue a reply and return its request id; answers ReplyStarted then Finished/Failed."""
        return self._reply(
            cmd.GenerateCommand(self._ids.new(), tuple(messages), settings, continue_last)
        )

    def switch_dtype(self, dtype: DType) -> None:
        """Queue a precision switch; answers SwitchStarted then SwitchFinished or SwitchFailed."""
        self._submit(cmd.SwitchCommand(dtype))

    def detect(self, model_path: Path | None = None, device: str = "auto") -> None:
        """Queue a detector run; answers CapabilitiesReady (with an Assessment for a path)."""
        self._submit(cmd.DetectCommand(model_path, device))

    def score_agreement(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        reference: str,
        *,
        reference_ids: Sequence[int] | None = None,
    ) -> int:
        """Queue a teacher-forced score of ``reference`` as the reply; answers AgreementScored."""
        ids = tuple(reference_ids) if reference_ids is not None else None
        command = cmd.ScoreCommand(self._ids.new(), tuple(messages), settings, reference, ids)
        self._submit(command)
        return command.request_id

    def _reply(self, command: cmd.GenerateCommand) -> int:
        """Queue the reply ``command`` asks for; a forwarding client returns the other's id."""
        self._submit(command)
        return command.request_id


class ModelClient(ClientBase):
    """A client that runs the model (in a thread, a process or on a server) and knows its state."""

    def __init__(self, sink: EventSink) -> None:
        super().__init__()
        self._sink = sink
        self._state: ModelState | None = None

    @property
    def state(self) -> ModelState | None:
        """What is loaded now, as last reported (None before a load, after a failure or crash)."""
        return self._state

    def _note_state(self, event: EngineEvent) -> None:
        """Keep `state` as a load or switch event reports it."""
        if isinstance(event, ModelLoaded | SwitchFinished | LoadFailed | SwitchFailed):
            self._state = event.state


class QueuedClient(ModelClient):
    """A client whose commands run in order on one daemon thread of its own."""

    def __init__(self, sink: EventSink, thread_name: str) -> None:
        super().__init__(sink)
        self._thread_name = thread_name
        self._commands: queue.SimpleQueue[cmd.Command] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        """Start the thread (idempotent)."""
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=self._thread_name, daemon=True
                )
                self._thread.start()

    def cancel(self) -> None:
        """Stop the running reply at its next token and drop every reply queued so far."""
        self._ids.cancel()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Cancel any reply, stop the thread after the queued commands and wait for it."""
        self.cancel()
        self._commands.put(cmd.StopCommand(timeout))
        if self._thread is not None:
            self._thread.join(timeout)

    def _submit(self, command: cmd.Command) -> None:
        self._commands.put(command)

    def _run(self) -> None:
        while not isinstance(command := self._commands.get(), cmd.StopCommand):
            try:
                self._dispatch(command)
            except BaseException as exc:
                # Even a SystemExit or KeyboardInterrupt raised by model code (remote code, a
                # hook) ends only this command: nothing else may end the thread that runs them,
                # or every later command would wait forever.
                self._fail(command, exc)
        self._stopped()

    @abstractmethod
    def _dispatch(self, command: cmd.Command) -> None:
        """Run ``command`` on the thread; what it answers goes to the sink."""

    @abstractmethod
    def _fail(self, command: cmd.Command, exc: BaseException) -> None:
        """End ``command`` with the failure event it calls for; the thread carries on."""

    def _stopped(self) -> None:
        """Called on the thread once the stop command is reached."""
