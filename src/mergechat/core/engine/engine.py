"""`Engine`: the one long-lived thread that owns the model and does all torch work.

Callers queue commands (every method returns at once); the thread answers with events through
the sink. torch and transformers are imported on the engine thread only, so importing this
module is cheap and no other thread ever runs a torch op (two torch-running threads in one
process fight over the same cores).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mergechat.core.api import (
    AgreementScored,
    CapabilitiesReady,
    EngineEvent,
    EngineNotice,
    EventSink,
    LoadFailed,
    LoadRequest,
    ModelLoaded,
    ReplyFailed,
    SwitchFailed,
    SwitchFinished,
)
from mergechat.core.client_base import QueuedClient, answer_skipped
from mergechat.core.client_commands import (
    Command,
    DetectCommand,
    GenerateCommand,
    LoadCommand,
    ScoreCommand,
    SwitchCommand,
)
from mergechat.core.dtypes import DType
from mergechat.core.engine.error_translation import translate
from mergechat.core.engine.prompt_cache import PromptCache

if TYPE_CHECKING:
    from mergechat.core.engine.loader import LoadedModel

_log = logging.getLogger(__name__)


class Engine(QueuedClient):
    """Implements `mergechat.core.api.EngineClient` with a command queue and one thread.

    ``sink`` is called on the engine thread for every event. ``probe_cache`` is the detector's
    cache file (None: the detector's default, the user cache dir's ``probes.json``).
    ``reuse_cache=False`` prefills every turn in full (the KV cache is not kept between turns).
    ``release_on_stop=False`` leaves the model's memory to the process's end (the engine process
    exits right after its stop: collecting garbage first only delays the exit).
    """

    def __init__(
        self,
        sink: EventSink,
        *,
        probe_cache: Path | None = None,
        reuse_cache: bool = True,
        release_on_stop: bool = True,
    ) -> None:
        super().__init__(sink, "mergechat-engine")
        self._prompt_cache = PromptCache(enabled=reuse_cache)
        self._probe_cache = probe_cache
        self._release_on_stop = release_on_stop
        self._loaded: LoadedModel | None = None

    # -- client side (any thread) ---------------------------------------------------------------
    @property
    def thread_ident(self) -> int | None:
        """The engine thread's ident once started (for checks that torch ran only there)."""
        return self._thread.ident if self._thread else None

    def start(self) -> None:
        """Start the engine thread (idempotent)."""
        # transformers materialises weights in a thread pool by default; those threads would
        # run torch ops beside the engine thread. Set here, before the thread exists.
        os.environ.setdefault("HF_DEACTIVATE_ASYNC_LOAD", "1")
        super().start()

    # -- engine thread ----------------------------------------------------------------------------
    def _dispatch(self, command: Command) -> None:
        if isinstance(command, LoadCommand):
            self._handle_load(command.request)
        elif isinstance(command, GenerateCommand):
            self._handle_generate(command)
        elif isinstance(command, SwitchCommand):
            self._handle_switch(command.dtype)
        elif isinstance(command, DetectCommand):
            self._handle_detect(command)
        elif isinstance(command, ScoreCommand):
            self._handle_score(command)

    def _handle_score(self, command: ScoreCommand) -> None:
        from mergechat.core.engine.agreement import score_reply

        if self._loaded is None:
            self._emit(AgreementScored(command.request_id, message="no model is loaded"))
            return
        found = score_reply(
            self._loaded,
            command.messages,
            command.settings,
            command.reference,
            command.reference_ids,
        )
        self._emit(
            AgreementScored(command.request_id, found.matched, found.tokens, found.first_miss)
        )

    def _stopped(self) -> None:
        if self._release_on_stop:
            self._unload()

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

    def _handle_generate(self, command: GenerateCommand) -> None:
        from mergechat.core.engine import generation

        if self._loaded is None:
            self._emit(ReplyFailed(command.request_id, "no model is loaded", hint="load one first"))
            return
        if not self._ids.begin(command.request_id):
            state = self._loaded.state
            answer_skipped(
                self._sink, command.request_id, state.context_max, state.dtype, state.device
            )
            return
        generation.reply(
            self._loaded,
            command.request_id,
            command.messages,
            command.settings,
            continue_last=command.continue_last,
            cancel=self._ids.stop,
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

    def _handle_detect(self, command: DetectCommand) -> None:
        from mergechat.core.detect import model_support as inspect
        from mergechat.core.detect import policy, probe
        from mergechat.core.detect.probe_shape import shape_for

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

    def _fail(self, command: Command, exc: BaseException) -> None:
        """End ``command`` with its failure event; the thread carries on."""
        state = self._state
        dtype, device = (state.dtype, state.device) if state else (None, None)
        if isinstance(command, LoadCommand):
            request = command.request
            dtype = None if request.dtype == "auto" else request.dtype
            device = None if request.device == "auto" else request.device
        elif isinstance(command, SwitchCommand):
            dtype = command.dtype
        error = translate(exc, dtype=dtype, device=device)
        _log.debug("engine command %r failed", command, exc_info=exc)
        event: EngineEvent
        if isinstance(command, LoadCommand):
            event = LoadFailed(error.message, error.hint, state, exit_code=error.exit_code)
        elif isinstance(command, GenerateCommand):
            event = ReplyFailed(command.request_id, error.message, hint=error.hint)
        elif isinstance(command, ScoreCommand):
            event = AgreementScored(command.request_id, message=error.message)
        elif isinstance(command, SwitchCommand):
            event = SwitchFailed(error.message, state, error.hint)
        else:
            event = EngineNotice(f"{error}", level="error")
        try:
            self._emit(event)
        except Exception:  # a broken sink must not take the engine thread down
            _log.exception("event sink failed while reporting an error")
