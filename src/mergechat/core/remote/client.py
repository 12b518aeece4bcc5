"""`RemoteClient`: the `EngineClient` for a model on an OpenAI-compatible server.

A worker thread runs the commands in order, as the local engine's thread does: a load asks the
server what it serves (and what it runs it on), a reply streams through the `openai` client, and
a cancel closes that stream. The precision is the server's: a switch answers why it cannot.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, cast

from mergechat.core.api import (
    AgreementScored,
    EngineNotice,
    EventSink,
    LoadFailed,
    LoadProgress,
    ModelLoaded,
    ModelState,
    ReplyFailed,
    SwitchFailed,
)
from mergechat.core.client_base import QueuedClient, answer_skipped
from mergechat.core.client_commands import (
    Command,
    GenerateCommand,
    LoadCommand,
    ScoreCommand,
    SwitchCommand,
)
from mergechat.core.dtypes import DType
from mergechat.core.errors import MergechatError
from mergechat.core.model.target import RemoteTarget, precision_help, target_of
from mergechat.core.remote.auth import find_api_key
from mergechat.core.remote.faults import server_text
from mergechat.core.remote.reply import ReplyJob, run_reply
from mergechat.core.remote.server_info import (
    NOT_REPORTED,
    ServerInfo,
    choose_model,
    describe,
    list_models,
)

#: Seconds to wait for a server's answer (also between two streamed pieces);
#: ``MERGECHAT_REMOTE_TIMEOUT`` overrides it.
DEFAULT_TIMEOUT_S = 120.0
#: Seconds to wait for the connection itself.
CONNECT_TIMEOUT_S = 10.0


def remote_timeout() -> float:
    """The answer timeout: `DEFAULT_TIMEOUT_S` or a valid ``MERGECHAT_REMOTE_TIMEOUT``."""
    try:
        value = float(os.environ.get("MERGECHAT_REMOTE_TIMEOUT", ""))
    except ValueError:
        return DEFAULT_TIMEOUT_S
    return value if 0 < value < 86400 else DEFAULT_TIMEOUT_S


class RemoteClient(QueuedClient):
    """An `EngineClient` whose model runs on a server; ``sink`` is called on its thread."""

    def __init__(self, sink: EventSink, *, timeout: float | None = None) -> None:
        super().__init__(sink, "mergechat-remote")
        self._timeout = timeout or remote_timeout()
        self._lock = threading.Lock()
        self._open_stream: Any = None
        self._client: Any = None
        self._server: tuple[RemoteTarget, ServerInfo] | None = None
        self._warned: set[str] = set()

    def cancel(self) -> None:
        """Close the streaming reply's connection and drop every reply queued so far."""
        self._ids.cancel()
        with self._lock:
            stream = self._open_stream
        if stream is not None:
            # Closing a half-read response may fail: it is gone either way.
            with contextlib.suppress(Exception):
                stream.close()

    def detect(self, model_path: Path | None = None, device: str = "auto") -> None:
        """Nothing to measure on this machine for a served model."""

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop any reply and the worker thread."""
        super().shutdown(timeout)
        if self._client is not None:
            self._client.close()

    # -- worker thread ----------------------------------------------------------------------------
    def _dispatch(self, command: Command) -> None:
        if isinstance(command, LoadCommand):
            self._load(command)
        elif isinstance(command, GenerateCommand):
            self._generate(command)
        elif isinstance(command, SwitchCommand):  # the precision is the server's
            path = self._state.path if self._state is not None else None
            message = f"Cannot switch to {command.dtype}: {precision_help(path)}"
            self._sink(SwitchFailed(message, self._state))
        elif isinstance(command, ScoreCommand):  # needs the logits, which a server does not give
            message = "not available for served models"
            self._sink(AgreementScored(command.request_id, message=message))

    def _fail(self, command: Command, exc: BaseException) -> None:
        # A bug must not end the thread: say it, keep going.
        self._sink(EngineNotice(f"remote client: {type(exc).__name__}: {exc}", "error"))

    def _load(self, command: LoadCommand) -> None:
        previous = self._state
        try:
            target = target_of(command.request.path)
            self._sink(LoadProgress("inspecting", 0.1, f"asking {target.base_url}"))
            key = find_api_key()
            models = list_models(target, key.value, min(self._timeout, 30.0))
            model = choose_model(target, models)
            self._sink(LoadProgress("loading", 0.6, f"{model} on {target.host_port}"))
            info = describe(target, model, models, key.value)
        except MergechatError as error:
            self._sink(LoadFailed(error.message, error.hint, previous, error.exit_code))
            return
        import openai

        if self._client is not None:
            self._client.close()
        self._client = openai.OpenAI(
            base_url=target.base_url,
            # Servers without authentication ignore the key; the client needs one to send.
            api_key=key.value or "none",
            timeout=openai.Timeout(self._timeout, connect=CONNECT_TIMEOUT_S),
            max_retries=0,
        )
        self._server = (target, info)
        warnings = [key.warning] if key.warning else []
        http_warning = target.plain_http_warning()
        if http_warning and target.host_port not in self._warned:
            self._warned.add(target.host_port)  # once per server and run
            warnings.insert(0, http_warning)
        self._state = _model_state(target, info)
        self._sink(ModelLoaded(self._state, tuple(warnings)))

    def _generate(self, command: GenerateCommand) -> None:
        request_id = command.request_id
        server, client = self._server, self._client
        if server is None or client is None:
            self._sink(ReplyFailed(request_id, "no model is loaded", hint="load one first"))
            return
        if not self._ids.begin(request_id):
            info = server[1]
            dtype = cast(DType, info.dtype or "")
            answer_skipped(self._sink, request_id, info.context_max or 0, dtype, info.device or "")
            return
        target, info = server
        job = ReplyJob(
            request_id,
            target,
            info,
            command.messages,
            command.settings,
            command.continue_last,
            cancelled=lambda: self._ids.cancelled(request_id),
            on_open=self._opened,
        )
        run_reply(client, job, self._sink)

    def _opened(self, stream: Any) -> None:
        with self._lock:
            self._open_stream = stream


def _model_state(target: RemoteTarget, info: ServerInfo) -> ModelState:
    """The `ModelState` of a served model: only what the server said, the rest marked so."""
    dtype = cast(DType, info.dtype or NOT_REPORTED)
    engine = info.engine or "an OpenAI-compatible server"
    return ModelState(
        path=target.path(info.model),
        name=server_text(info.model, 80),
        device=" · ".join(part for part in (target.host_port, info.device) if part),
        dtype=dtype,
        disk_dtype=dtype,
        context_max=info.context_max or 0,
        reason=f"served by {engine} at {target.base_url}; the server fixes the precision.",
    )
