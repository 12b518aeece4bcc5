"""`RoutingEngine`: one `EngineClient` for the app that sends a load of a server URL to the remote
client and any other load to the local engine, so F2 moves between them freely.

A session that begins on a served model starts the local engine only when a local model (or the
detector) is asked for, so it never imports torch for the server; a local session never imports
the HTTP client.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from mergechat.core.api import EngineClient, EventSink, LoadRequest
from mergechat.core.client_base import ClientBase
from mergechat.core.client_commands import Command, GenerateCommand, apply, ask_reply
from mergechat.core.model.target import looks_remote

LocalFactory = Callable[[EventSink], EngineClient]


def _remote_client(sink: EventSink) -> EngineClient:
    from mergechat.core.remote.client import RemoteClient

    return RemoteClient(sink)


class RoutingEngine(ClientBase):
    """Routes each command to the engine of the model last asked for (local or remote)."""

    def __init__(
        self,
        sink: EventSink,
        local: LocalFactory,
        remote: LocalFactory = _remote_client,
        *,
        start_local: bool = True,
    ) -> None:
        super().__init__()
        self._sink = sink
        self._start_local = start_local
        self._factories = {False: local, True: remote}
        self._engines: dict[bool, EngineClient] = {}
        self._lock = threading.Lock()
        #: True while the model in use (or being loaded) is a served one.
        self.remote = False

    def _engine(self, remote: bool) -> EngineClient:
        with self._lock:
            engine = self._engines.get(remote)
            if engine is None:
                engine = self._engines[remote] = self._factories[remote](self._sink)
                engine.start()
            return engine

    def start(self) -> None:
        """Build the side the session begins on now (the app calls this off the UI thread)."""
        self._engine(not self._start_local)

    def load(self, request: LoadRequest) -> None:
        """Load on the side ``request.path`` names; the other side's model is let go."""
        remote = looks_remote(request.path)
        with self._lock:
            self.remote = remote
            other = self._engines.pop(not remote, None)
        if other is not None:
            # A local model's memory (or a server connection) is not kept for a model unused.
            threading.Thread(target=other.shutdown, name="mergechat-release", daemon=True).start()
        engine = self._engines.get(remote)
        if engine is not None:
            engine.load(request)
            return
        # Building a side imports its libraries (torch, or the HTTP client): not on the caller's
        # (the UI's) thread.
        threading.Thread(
            target=lambda: self._engine(remote).load(request), name="mergechat-engine", daemon=True
        ).start()

    def _reply(self, command: GenerateCommand) -> int:
        """Queue a reply on the side in use; its id is that side's."""
        return ask_reply(self._engine(self.remote), command)

    def _submit(self, command: Command) -> None:
        """A switch (the one command not routed above) goes to the side in use."""
        apply(self._engine(self.remote), command)

    def cancel(self) -> None:
        """Stop the reply of the side in use (if it was ever started)."""
        engine = self._engines.get(self.remote)
        if engine is not None:
            engine.cancel()

    def detect(self, model_path: Path | None = None, device: str = "auto") -> None:
        """This machine's devices (and a local model's fit) come from the local engine only."""
        if model_path is not None and looks_remote(model_path):
            return
        self._engine(False).detect(model_path, device)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Shut both sides down."""
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.shutdown(timeout)


def routing_factory(
    local: LocalFactory, first_model: str | os.PathLike[str] | None
) -> Callable[[EventSink], EngineClient]:
    """The app's engine factory: a `RoutingEngine` over ``local`` and the remote client.

    The local engine starts with the app unless the first model is a server URL.
    """
    start_local = first_model is None or not looks_remote(first_model)

    def build(sink: EventSink) -> EngineClient:
        return RoutingEngine(sink, local, start_local=start_local)

    return build
