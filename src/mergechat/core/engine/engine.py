"""`Engine`: the one long-lived thread that owns the model and does all torch work.

Callers queue commands (every method returns at once); the thread answers with events through
the sink. torch and transformers are imported on the engine thread only, so importing this
module is cheap and no other thread ever runs a torch op (two torch-running threads in one
process fight over the same cores).
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from mergechat.core.api import (
    CapabilitiesReady,
    ChatMessage,
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
    ReplyStats,
    SwitchFailed,
    SwitchFinished,
)
from mergechat.core.dtypes import DType
from mergechat.core.engine.error_translation import translate
from mergechat.core.engine.prompt_cache import PromptCache
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.streaming import ReplyStream

if TYPE_CHECKING:
    from mergechat.core.engine.loader import LoadedModel

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Load:
    request: LoadRequest


@dataclass(frozen=True)
class _Generate:
    request_id: int
    messages: tuple[ChatMessage, ...]
    settings: GenerationSettings
    continue_last: bool
    requested_at: float


@dataclass(frozen=True)
class _Switch:
    dtype: DType


@dataclass(frozen=True)
class _Detect:
    model_path: Path | None
    device: str


class _Stop:
    pass


_Command = _Load | _Generate | _Switch | _Detect | _Stop


class Engine:
    """Implements `mergechat.core.api.EngineClient` with a command queue and one thread.

    ``sink`` is called on the engine thread for every event. ``probe_cache`` is the detector's
    cache file (None: the detector's default, the user cache dir's ``probes.json``).
    ``reuse_cache=False`` prefills every turn in full (the KV cache is not kept between turns).
    """

    def __init__(
        self, sink: EventSink, *, probe_cache: Path | None = None, reuse_cache: bool = True
    ) -> None:
        self._sink = sink
        self._prompt_cache = PromptCache(enabled=reuse_cache)
        self._probe_cache = probe_cache
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._last_id = 0
        self._cancelled_upto = 0
        self._thread: threading.Thread | None = None
        self._loaded: LoadedModel | None = None
        self._state: ModelState | None = None

    # -- client side (any thread) ---------------------------------------------------------------
    @property
    def state(self) -> ModelState | None:
        """What is loaded now (None before the first load or after a failed one)."""
        return self._state

    @property
    def thread_ident(self) -> int | None:
        """The engine thread's ident once started (for checks that torch ran only there)."""
        return self._thread.ident if self._thread else None

    def start(self) -> None:
        """Start the engine thread (idempotent)."""
        if self._thread is None:
            # transformers materialises weights in a thread pool by default; those threads would
            # run torch ops beside the engine thread. Set here, before the thread exists.
            os.environ.setdefault("HF_DEACTIVATE_ASYNC_LOAD", "1")
            self._thread = threading.Thread(target=self._run, name="mergechat-engine", daemon=True)
            self._thread.start()

    def load(self, request: LoadRequest) -> None:
        """Queue a model load; answers LoadProgress..., then ModelLoaded or LoadFailed."""
        self._commands.put(_Load(request))

    def generate(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        *,
        continue_last: bool = False,
    ) -> int:
        """Queue a reply and return its request id; answers ReplyStarted then Finished/Failed."""
        requested_at = time.perf_counter()
        with self._lock:
            request_id = self._last_id = next(self._ids)
        self._commands.put(
            _Generate(request_id, tuple(messages), settings, continue_last, requested_at)
        )
        return request_id

    def cancel(self) -> None:
        """Stop the running reply at its next token and drop every reply queued so far."""
        with self._lock:
            self._cancelled_upto = self._last_id
            self._cancel.set()

    def switch_dtype(self, dtype: DType) -> None:
        """Queue a precision switch; answers SwitchStarted then SwitchFinished or SwitchFailed."""
        self._commands.put(_Switch(dtype))

    def detect(self, model_path: Path | None = None, device: str = "auto") -> None:
        """Queue a detector run; answers CapabilitiesReady (with an Assessment for a path)."""
        self._commands.put(_Detect(model_path, device))

    def shutdown(self, timeout: float = 5.0) -> None:
        """Cancel any reply, stop the thread after the queued commands and wait for it."""
        self.cancel()
        self._commands.put(_Stop())
        if self._thread is not None:
            self._thread.join(timeout)

    # -- engine thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            command = self._commands.get()
            if isinstance(command, _Stop):
                break
            try:
                self._dispatch(command)
            except BaseException as exc:
                # Even a SystemExit or KeyboardInterrupt raised by model code (remote code, a
                # hook) ends only this command: nothing else may end the thread that owns the
                # model, or every later command would wait forever.
                self._fail(command, exc)
        self._unload()

    def _dispatch(self, command: _Command) -> None:
        if isinstance(command, _Load):
            self._handle_load(command.request)
        elif isinstance(command, _Generate):
            self._handle_generate(command)
        elif isinstance(command, _Switch):
            self._handle_switch(command.dtype)
        elif isinstance(command, _Detect):
            self._handle_detect(command)

    def _handle_load(self, request: LoadRequest) -> None:
        from mergechat.core.engine import loader, speed_check

        self._prompt_cache.drop()
        loaded = loader.load(
            request,
            probe_cache=self._probe_cache,
            progress=self._emit,
            release_previous=self._unload,
        )
        loaded = speed_check.calibrated(loaded, progress=self._emit)
        self._set_loaded(loaded)
        self._emit(ModelLoaded(loaded.state, loaded.warnings))

    def _handle_generate(self, command: _Generate) -> None:
        from mergechat.core.engine import generation

        if self._loaded is None:
            self._emit(ReplyFailed(command.request_id, "no model is loaded", hint="load one first"))
            return
        with self._lock:
            cancelled = command.request_id <= self._cancelled_upto
            if not cancelled:
                self._cancel.clear()
        if cancelled:
            self._emit_skipped(command, self._loaded.state)
            return
        generation.reply(
            self._loaded,
            command.request_id,
            command.messages,
            command.settings,
            continue_last=command.continue_last,
            cancel=self._cancel,
            requested_at=command.requested_at,
            emit=self._emit,
            cache=self._prompt_cache,
        )

    def _handle_switch(self, dtype: DType) -> None:
        from mergechat.core.engine import speed_check, switching

        if self._loaded is None:
            self._emit(SwitchFailed("no model is loaded", None, hint="load one first"))
            return
        loaded = self._loaded
        self._prompt_cache.drop()  # its tensors are in the old precision; free them first
        try:
            result, outcome = switching.switch(loaded, dtype, emit=self._emit)
        except BaseException:
            # switch() restores on its own failures; this is an unexpected error (e.g. in the
            # reference probe, before any change). Keep the model unless it was released.
            if loaded.model is None:
                self._set_loaded(None)
            raise
        if isinstance(outcome, SwitchFinished) and result is not None:
            result = speed_check.calibrated(result)
            outcome = replace(outcome, state=result.state)
        self._set_loaded(result)
        self._emit(outcome)

    def _handle_detect(self, command: _Detect) -> None:
        from mergechat.core.detect import policy, probe
        from mergechat.core.detect.probe_shape import shape_for
        from mergechat.core.detect import model_support as inspect

        info, failure = None, None
        if command.model_path is not None:
            try:
                info = inspect.inspect_model(command.model_path)
            except Exception as exc:
                failure = exc
        caps = probe.detect(shape=shape_for(info), cache_file=self._probe_cache)
        if failure is not None:
            # The devices and probes are still good: a waiting screen gets them, then the
            # error is reported as a notice like any failed command.
            self._emit(CapabilitiesReady(caps, None))
            raise failure
        assessment = None
        if info is not None:
            assessment = policy.assess(
                info, caps, device=command.device, dtype="auto", context_tokens=None
            )
        self._emit(CapabilitiesReady(caps, assessment))

    def _emit_skipped(self, command: _Generate, state: ModelState) -> None:
        """Answer a reply cancelled before it started: an empty, stopped reply."""
        stream = ReplyStream(lambda _ids: "")
        stream.close()
        self._emit(ReplyStarted(command.request_id, stream, 0, state.context_max))
        stats = ReplyStats(0, 0, 0.0, 0.0, 0.0, 0, state.context_max, state.dtype, state.device)
        self._emit(ReplyFinished(command.request_id, "", stats, "stopped"))

    def _set_loaded(self, loaded: LoadedModel | None) -> None:
        self._prompt_cache.drop()
        self._loaded = loaded
        self._state = loaded.state if loaded is not None else None

    def _unload(self) -> None:
        if self._loaded is None:
            return
        from mergechat.core.engine import loader

        loaded = self._loaded
        self._set_loaded(None)
        loader.release(loaded)

    def _emit(self, event: EngineEvent) -> None:
        self._sink(event)

    def _fail(self, command: _Command, exc: BaseException) -> None:
        """End ``command`` with its failure event; the thread carries on."""
        state = self._state
        dtype, device = (state.dtype, state.device) if state else (None, None)
        if isinstance(command, _Load):
            request = command.request
            dtype = None if request.dtype == "auto" else request.dtype
            device = None if request.device == "auto" else request.device
        elif isinstance(command, _Switch):
            dtype = command.dtype
        error = translate(exc, dtype=dtype, device=device)
        _log.debug("engine command %r failed", command, exc_info=exc)
        event: EngineEvent
        if isinstance(command, _Load):
            event = LoadFailed(error.message, error.hint, state, exit_code=error.exit_code)
        elif isinstance(command, _Generate):
            event = ReplyFailed(command.request_id, error.message, hint=error.hint)
        elif isinstance(command, _Switch):
            event = SwitchFailed(error.message, state, error.hint)
        else:
            event = EngineNotice(f"{error}", level="error")
        try:
            self._emit(event)
        except Exception:  # a broken sink must not take the engine thread down
            _log.exception("event sink failed while reporting an error")
