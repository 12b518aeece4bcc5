"""The engine process: runs the thread `Engine` and talks to the app over two pipes.

Started by `mergechat.core.engine.process` as ``python -m mergechat.core.engine.worker CMD_FD
EVENT_FD [PROBE_CACHE]``. The main thread reads commands (so a cancel reaches the engine while it
generates), the engine thread's events go back pickled, and a forwarder thread decodes each
streaming reply and sends its new text in batches. The process ends when the app closes its pipe.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path

from mergechat.core.api import (
    AgreementScored,
    EngineEvent,
    EngineNotice,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
)
from mergechat.core.client_commands import (
    Command,
    PromptCommand,
    StopCommand,
    apply,
)
from mergechat.core.engine.engine import Engine
from mergechat.core.engine.wire import ChunkMessage, EventMessage, Message, StartedMessage
from mergechat.core.streaming import ReplyStream

_log = logging.getLogger(__name__)

#: Seconds between two text batches of a streaming reply.
FORWARD_INTERVAL = 0.02
#: Seconds between two looks for a reply's first token.
FIRST_TOKEN_INTERVAL = 0.003


class Worker:
    """Owns the `Engine`, maps the app's request ids to the engine's, relays replies as text."""

    def __init__(self, events: Connection, probe_cache: Path | None) -> None:
        self._events = events
        self._send_lock = threading.Lock()
        self._ids_lock = threading.Lock()
        #: The engine's request id -> the app's.
        self._ids: dict[int, int] = {}
        self._relay_lock = threading.Lock()
        #: The app's request id -> (stream, token count sent so far).
        self._streams: dict[int, tuple[ReplyStream, int]] = {}
        self._streaming = threading.Event()
        self._stopped = threading.Event()
        self.engine = Engine(self._sink, probe_cache=probe_cache, release_on_stop=False)
        self._forwarder = threading.Thread(
            target=self._forward_loop, name="mergechat-forwarder", daemon=True
        )

    def run(self, commands: Connection) -> None:
        """Start the engine, obey commands until a stop or the app's end, then shut down."""
        self.engine.start()
        self._forwarder.start()
        timeout = 5.0
        while True:
            try:
                command: Command = commands.recv()
            except (EOFError, OSError):
                break  # the app is gone
            if isinstance(command, StopCommand):
                timeout = command.timeout
                break
            self._dispatch(command)
        self.engine.shutdown(timeout)
        self._stopped.set()
        self._streaming.set()

    def _dispatch(self, command: Command) -> None:
        if isinstance(command, PromptCommand):
            # Under the lock, so the engine thread cannot report the reply before its id is known.
            with self._ids_lock:
                self._ids[apply(self.engine, command) or 0] = command.request_id
        else:
            apply(self.engine, command)

    # -- engine thread ----------------------------------------------------------------------------
    def _sink(self, event: EngineEvent) -> None:
        if isinstance(event, ReplyStarted):
            app_id = self._app_id(event.request_id, done=False)
            with self._relay_lock:
                self._streams[app_id] = (event.stream, 0)
                self._send(
                    StartedMessage(
                        app_id, event.prompt_tokens, event.context_max, event.dropped_messages
                    )
                )
            self._streaming.set()
        elif isinstance(event, ReplyFinished | ReplyFailed):
            app_id = self._app_id(event.request_id, done=True)
            with self._relay_lock:
                entry = self._streams.pop(app_id, None)
                if entry is not None:
                    self._forward(app_id, *entry)
            self._send(EventMessage(replace(event, request_id=app_id)))
        elif isinstance(event, AgreementScored):
            app_id = self._app_id(event.request_id, done=True)
            self._send(EventMessage(replace(event, request_id=app_id)))
        else:
            self._send(EventMessage(event))

    def _app_id(self, engine_id: int, *, done: bool) -> int:
        with self._ids_lock:
            if done:
                return self._ids.pop(engine_id, engine_id)
            return self._ids.get(engine_id, engine_id)

    def _send(self, message: Message) -> None:
        try:
            with self._send_lock:
                self._events.send(message)
        except OSError:
            pass  # the app is gone; the command loop sees it and ends the process
        except Exception as error:  # an event that does not pickle: say so instead
            _log.debug("could not send %r", message, exc_info=error)
            notice = EngineNotice(f"the engine could not report an event: {error}", "error")
            self._send(EventMessage(notice))

    # -- forwarder thread -------------------------------------------------------------------------
    def _forward_loop(self) -> None:
        while not self._stopped.is_set():
            self._streaming.wait()
            with self._relay_lock:
                # The first token goes out at once: batching only after it keeps the TTFT.
                first = any(sent == 0 for _, sent in self._streams.values())
            if self._stopped.wait(FIRST_TOKEN_INTERVAL if first else FORWARD_INTERVAL):
                return
            with self._relay_lock:
                for app_id, (stream, sent) in list(self._streams.items()):
                    self._streams[app_id] = (stream, self._forward(app_id, stream, sent))
                if not self._streams:
                    self._streaming.clear()

    def _forward(self, app_id: int, stream: ReplyStream, sent: int) -> int:
        """Send the text decoded since the last chunk and the token ids after the ``sent``
        first; return the token count sent."""
        text = stream.drain()
        ids = stream.token_ids(sent)
        if text or ids:
            self._send(ChunkMessage(app_id, text, sent + len(ids), tuple(ids)))
        return sent + len(ids)


def main(argv: list[str]) -> int:
    """Entry point of the engine process (see the module docstring for the arguments)."""
    faulthandler.enable()  # a segfault leaves a traceback in the engine log
    commands = Connection(int(argv[0]), writable=False)
    events = Connection(int(argv[1]), readable=False)
    probe_cache = Path(argv[2]) if len(argv) > 2 and argv[2] else None
    Worker(events, probe_cache).run(commands)
    events.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Library threads (torch's pools) must not keep a finished engine process alive.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
