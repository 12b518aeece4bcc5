"""`ProcessEngine`: the engine in its own process, so the UI and torch never share a GIL.

Implements `EngineClient` over two pipes to `mergechat.core.engine.worker` (which runs the thread
`Engine`). This module never imports torch. A reader thread turns the process's messages back into
events; when the process dies (segfault, CUDA abort, OOM kill) it fails the replies in flight,
keeping their text, and reports `EngineCrashed`. The next command starts a fresh process.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from mergechat.core.api import (
    ChatMessage,
    EngineCrashed,
    EngineEvent,
    EngineNotice,
    EventSink,
    LoadFailed,
    LoadRequest,
    ModelLoaded,
    ModelState,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    SwitchFailed,
    SwitchFinished,
)
from mergechat.core.dtypes import DType
from mergechat.core.engine.child import LOG_NAME, EngineChild
from mergechat.core.engine.wire import (
    CancelCommand,
    ChunkMessage,
    Command,
    DetectCommand,
    GenerateCommand,
    LoadCommand,
    Message,
    RelayedStream,
    StartedMessage,
    StopCommand,
    SwitchCommand,
)
from mergechat.core.settings import locations
from mergechat.core.settings.generation import GenerationSettings


class ProcessEngine:
    """An `EngineClient` whose engine runs in a child process started on first use.

    ``sink`` is called on the reader thread for every event, as `Engine` calls it on its thread.
    """

    def __init__(self, sink: EventSink, *, probe_cache: Path | None = None) -> None:
        self._sink = sink
        self._probe_cache = probe_cache
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._child: EngineChild | None = None
        self._state: ModelState | None = None

    @property
    def state(self) -> ModelState | None:
        """What is loaded now, as last reported (None before a load or after a crash)."""
        return self._state

    @property
    def pid(self) -> int | None:
        """The engine process's id while one runs."""
        child = self._child
        return child.process.pid if child is not None and not child.dead else None

    @property
    def log_path(self) -> Path:
        """Where the engine process writes its output."""
        return locations.cache_dir() / LOG_NAME

    def start(self) -> None:
        """Start the engine process now (idempotent; every command starts one when needed)."""
        with self._lock:
            self._running_child()

    def _running_child(self) -> EngineChild:
        # Called with the lock held.
        child = self._child
        if child is None or child.dead:
            child = self._child = EngineChild(self._probe_cache)
            child.reader = threading.Thread(
                target=self._read, args=(child,), name="mergechat-engine-reader", daemon=True
            )
            child.reader.start()
        return child

    def _send(self, command: Command) -> None:
        with self._lock:
            child = self._running_child()
        child.send(command)

    def load(self, request: LoadRequest) -> None:
        """Queue a model load; answers LoadProgress..., then ModelLoaded or LoadFailed."""
        self._send(LoadCommand(request))

    def generate(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        *,
        continue_last: bool = False,
    ) -> int:
        """Queue a reply and return its request id; answers ReplyStarted then Finished/Failed."""
        with self._lock:
            child = self._running_child()
            request_id = next(self._ids)
            child.open[request_id] = None
        child.send(GenerateCommand(request_id, tuple(messages), settings, continue_last))
        return request_id

    def cancel(self) -> None:
        """Stop the running reply at its next token and drop every reply queued so far."""
        child = self._child
        if child is not None and not child.dead:
            child.send(CancelCommand())

    def switch_dtype(self, dtype: DType) -> None:
        """Queue a precision switch; answers SwitchStarted then SwitchFinished or SwitchFailed."""
        self._send(SwitchCommand(dtype))

    def detect(self, model_path: Path | None = None, device: str = "auto") -> None:
        """Queue a detector run; answers CapabilitiesReady (with an Assessment for a path)."""
        self._send(DetectCommand(model_path, device))

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the engine process (killed if it has not ended after ``timeout`` seconds)."""
        with self._lock:
            child, self._child = self._child, None
        if child is None:
            return
        child.closing = True
        child.send(StopCommand(timeout))
        try:
            child.process.wait(timeout)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
        if child.reader is not None:
            child.reader.join(timeout)
        child.commands.close()

    # -- reader thread ----------------------------------------------------------------------------
    def _read(self, child: EngineChild) -> None:
        while True:
            try:
                message: Message = child.events.recv()
            except (EOFError, OSError):
                break
            except Exception as error:  # a message that does not unpickle: keep reading
                self._sink(EngineNotice(f"the engine sent an unreadable message: {error}", "error"))
                continue
            self._deliver(child, message)
        child.events.close()
        with self._lock:
            child.dead = True
            ended, child.open = child.open, {}
        if child.closing:
            return
        self._crashed(child, ended)

    def _deliver(self, child: EngineChild, message: Message) -> None:
        if isinstance(message, ChunkMessage):
            stream = child.open.get(message.request_id)
            if stream is not None:
                stream.feed(message.text, message.tokens)
            return
        if isinstance(message, StartedMessage):
            stream = RelayedStream()
            with self._lock:
                if message.request_id in child.open:
                    child.open[message.request_id] = stream
            event: EngineEvent = ReplyStarted(
                message.request_id,
                stream,
                message.prompt_tokens,
                message.context_max,
                message.dropped_messages,
            )
        else:
            event = message.event
            if isinstance(event, ReplyFinished | ReplyFailed):
                with self._lock:
                    ended = child.open.pop(event.request_id, None)
                if ended is not None:
                    ended.close()
            self._track_state(event)
        self._sink(event)

    def _track_state(self, event: EngineEvent) -> None:
        if isinstance(event, ModelLoaded | SwitchFinished | LoadFailed | SwitchFailed):
            self._state = event.state

    def _crashed(self, child: EngineChild, ended: dict[int, RelayedStream | None]) -> None:
        """Fail the replies the dead process left open, then report the crash."""
        how = child.how_it_ended()
        self._state = None
        for request_id, stream in sorted(ended.items()):
            partial = ""
            if stream is not None:
                partial = stream.received_text
                stream.close()
            # No hint: the crash notice that follows says what to do.
            self._sink(ReplyFailed(request_id, "the engine process stopped", partial))
        self._sink(EngineCrashed(f"The engine process stopped ({how}).", log=str(child.log_path)))
