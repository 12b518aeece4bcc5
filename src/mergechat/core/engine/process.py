"""`ProcessEngine`: the engine in its own process, so the UI and torch never share a GIL.

Implements `EngineClient` over two pipes to `mergechat.core.engine.worker` (which runs the thread
`Engine`). This module never imports torch. A reader thread turns the process's messages back into
events; when the process dies (segfault, CUDA abort, OOM kill) it fails the replies in flight,
keeping their text, and reports `EngineCrashed`. The next command starts a fresh process.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path

from mergechat.core.api import (
    EngineCrashed,
    EngineEvent,
    EngineNotice,
    EventSink,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
)
from mergechat.core.client_base import ModelClient
from mergechat.core.client_commands import CancelCommand, Command, GenerateCommand, StopCommand
from mergechat.core.engine.child import EngineChild
from mergechat.core.engine.wire import ChunkMessage, Message, RelayedStream, StartedMessage


class ProcessEngine(ModelClient):
    """An `EngineClient` whose engine runs in a child process started on first use.

    ``sink`` is called on the reader thread for every event, as `Engine` calls it on its thread.
    ``env`` adds environment variables for the engine process.
    """

    def __init__(
        self,
        sink: EventSink,
        *,
        probe_cache: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(sink)
        self._probe_cache = probe_cache
        self._env = dict(env or {})
        self._lock = threading.Lock()
        self._child: EngineChild | None = None

    @property
    def pid(self) -> int | None:
        """The engine process's id while one runs."""
        child = self._child
        return child.process.pid if child is not None and not child.dead else None

    @property
    def log_path(self) -> Path | None:
        """Where the engine process running now writes its output (None: none runs)."""
        child = self._child
        return child.log_path if child is not None else None

    def start(self) -> None:
        """Start the engine process now (idempotent; every command starts one when needed)."""
        with self._lock:
            self._running_child()

    def _running_child(self) -> EngineChild:
        # Called with the lock held.
        child = self._child
        if child is None or child.dead:
            child = self._child = EngineChild(self._probe_cache, self._env)
            child.reader = threading.Thread(
                target=self._read, args=(child,), name="mergechat-engine-reader", daemon=True
            )
            child.reader.start()
        return child

    def _submit(self, command: Command) -> None:
        with self._lock:
            child = self._running_child()
            if isinstance(command, GenerateCommand):
                # Known before the process can answer, so its first chunk finds the reply.
                child.open[command.request_id] = None
        child.send(command)

    def cancel(self) -> None:
        """Stop the running reply at its next token and drop every reply queued so far."""
        child = self._child
        if child is not None and not child.dead:
            child.send(CancelCommand())

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
                stream.feed(message.text, message.tokens, message.ids)
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
            self._note_state(event)
        self._sink(event)

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
