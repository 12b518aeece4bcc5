"""`FakeEngine`: a scripted `EngineClient` for app tests, with a real thread and `ReplyStream`.

It loads instantly (a few `LoadProgress` events), streams scripted tokens at a configurable
pace, honours `cancel`, switches precision, and reports fixed stats so snapshots are stable.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from mergechat.core.api import (
    CapabilitiesReady,
    ChatMessage,
    EngineEvent,
    EventSink,
    FidelityReport,
    LoadFailed,
    LoadProgress,
    LoadRequest,
    MeasuredSpeed,
    ModelLoaded,
    ModelState,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    ReplyStats,
    SwitchFailed,
    SwitchFinished,
    SwitchStarted,
)
from mergechat.core.detect.capabilities import Capabilities, DeviceInfo, ProbeResult
from mergechat.core.dtypes import DTYPES, DType
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.streaming import ReplyStream

#: The reply every request gets unless the test scripts another.
DEFAULT_REPLY = ["Hello", "!", " I", " am", " a", " **fake**", " model", "."]
CONTEXT_MAX = 2048


@dataclass
class Script:
    """What the fake answers; tests change fields before or between requests."""

    reply: list[str] = field(default_factory=lambda: list(DEFAULT_REPLY))
    #: Seconds between tokens (0: as fast as the thread runs).
    token_delay: float = 0.0
    #: Seconds before the first token.
    first_token_delay: float = 0.0
    load_error: str | None = None
    reply_error: str | None = None
    switch_error: str | None = None
    #: Seconds the switch takes.
    switch_delay: float = 0.0
    dtype: DType = "bfloat16"
    #: What calibration measured on the (fake) model, put on its state.
    speed: MeasuredSpeed | None = None
    device: str = "cpu"
    merge_method: str | None = "dare_ties"
    #: Seconds each load step takes.
    load_step_delay: float = 0.0
    #: When set, a load waits (after its first progress event) until this event is set.
    load_gate: threading.Event | None = None
    #: When set, a reply waits (after ReplyStarted) until this event is set.
    reply_gate: threading.Event | None = None


def fixed_stats(new_tokens: int, prompt_tokens: int, dtype: DType, device: str) -> ReplyStats:
    """Stats with fixed timings, so footers and snapshots do not vary."""
    return ReplyStats(
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        ttft_s=0.05,
        total_s=0.5,
        decode_tokens_per_s=25.0,
        context_used=prompt_tokens + new_tokens,
        context_max=CONTEXT_MAX,
        dtype=dtype,
        device=device,
    )


class FakeEngine:
    """Implements `EngineClient`; every command runs on one thread, like the real engine."""

    def __init__(self, sink: EventSink, script: Script | None = None) -> None:
        self._sink = sink
        self.script = script or Script()
        self._commands: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self.state: ModelState | None = None
        #: Calls as made, for assertions.
        self.loads: list[LoadRequest] = []
        self.generations: list[tuple[list[ChatMessage], GenerationSettings, bool]] = []
        self.switches: list[DType] = []
        self.detections: list[tuple[Path | None, str]] = []
        self.cancels = 0
        self.shut_down = False
        self.events: list[EngineEvent] = []

    def _emit(self, event: EngineEvent) -> None:
        self.events.append(event)
        self._sink(event)

    # -- EngineClient -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fake-engine", daemon=True)
            self._thread.start()

    def load(self, request: LoadRequest) -> None:
        self.loads.append(request)
        self._commands.put(lambda: self._load(request))

    def generate(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        *,
        continue_last: bool = False,
    ) -> int:
        request_id = next(self._ids)
        self.generations.append((list(messages), settings, continue_last))
        self._cancel.clear()
        self._commands.put(lambda: self._generate(request_id, list(messages), settings))
        return request_id

    def cancel(self) -> None:
        self.cancels += 1
        self._cancel.set()

    def switch_dtype(self, dtype: DType) -> None:
        self.switches.append(dtype)
        self._commands.put(lambda: self._switch(dtype))

    def detect(self, model_path: Path | None = None, device: str = "auto") -> None:
        self.detections.append((model_path, device))
        self._commands.put(self._detect)

    def shutdown(self, timeout: float = 5.0) -> None:
        self.shut_down = True
        self._cancel.set()
        self._commands.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    # -- engine thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while (command := self._commands.get()) is not None:
            command()

    def _load(self, request: LoadRequest) -> None:
        script = self.script
        for stage, fraction in (("inspecting", 0.1), ("reading", 0.5), ("warm-up", 0.9)):
            self._emit(LoadProgress(stage, fraction, f"{stage} {request.path.name}"))  # type: ignore[arg-type]
            time.sleep(script.load_step_delay)
            if script.load_gate is not None:
                script.load_gate.wait(30)
        if script.load_error:
            self._emit(LoadFailed(script.load_error, "a hint", self.state))
            return
        dtype = script.dtype if request.dtype == "auto" else request.dtype
        self.state = ModelState(
            path=request.path,
            name=request.path.name,
            device=script.device,
            device_id=script.device,  # the fake's device label is a plain device id
            dtype=dtype,
            disk_dtype="bfloat16",
            context_max=CONTEXT_MAX,
            merge_method=script.merge_method,
            reason="fake engine",
            speed=script.speed,
        )
        self._emit(ModelLoaded(self.state))

    def _generate(
        self, request_id: int, messages: list[ChatMessage], settings: GenerationSettings
    ) -> None:
        script, state = self.script, self.state
        if state is None:
            self._emit(ReplyFailed(request_id, "no model is loaded"))
            return
        tokens = script.reply[: settings.max_new_tokens]
        stream = ReplyStream(lambda ids: "".join(tokens[i] for i in ids))
        prompt_tokens = sum(len(m.content.split()) for m in messages)
        self._emit(ReplyStarted(request_id, stream, prompt_tokens, CONTEXT_MAX))
        time.sleep(script.first_token_delay)
        if script.reply_gate is not None:
            script.reply_gate.wait(30)
        sent = 0
        for index in range(len(tokens)):
            if self._cancel.is_set():
                break
            if script.reply_error and index == len(tokens) // 2:
                stream.close()
                partial = "".join(tokens[:index])
                self._emit(ReplyFailed(request_id, script.reply_error, partial_text=partial))
                return
            stream.push([index])
            sent += 1
            if script.token_delay:
                time.sleep(script.token_delay)
        stream.close()
        if self._cancel.is_set():
            finish = "stopped"
        elif len(tokens) < len(script.reply):
            finish = "length"
        else:
            finish = "complete"
        stats = fixed_stats(sent, prompt_tokens, state.dtype, state.device)
        self._emit(ReplyFinished(request_id, "".join(tokens[:sent]), stats, finish))  # type: ignore[arg-type]

    def _switch(self, dtype: DType) -> None:
        state, script = self.state, self.script
        if state is None:
            self._emit(SwitchFailed("no model is loaded", None))
            return
        self._emit(SwitchStarted(state.dtype, dtype, "cast"))
        time.sleep(script.switch_delay)
        if script.switch_error:
            self._emit(SwitchFailed(script.switch_error, state, "kept the previous precision"))
            return
        report = FidelityReport(state.dtype, dtype, 40, 0.975, 0.125)
        self.state = replace(state, dtype=dtype)
        self._emit(SwitchFinished(self.state, "cast", 0.09, report))

    def _detect(self) -> None:
        device = self.script.device
        probes = tuple(
            ProbeResult(
                device, d, "ok" if d != "float16" else "slow", 0.01, 1.0 if d != "float16" else 3.5
            )
            for d in DTYPES
        )
        info = DeviceInfo(device, "cpu", "Fake CPU", None, None, cores=2)
        self._emit(CapabilitiesReady(Capabilities((info,), probes, "fake", 0.0)))
