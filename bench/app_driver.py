"""Worker-side drivers of mergechat's real one-shot path and real app, one prompt per run.

Both keep one model loaded for the life of the worker process and time each run from the moment
a user would start it (``run_oneshot`` called; Enter pressed in the app) with ``perf_counter``,
the clock the engine's `ReplyStats` use, so engine-side and outside times can be combined.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mergechat.core.api import (
    ChatMessage,
    EngineEvent,
    EventSink,
    LoadFailed,
    LoadRequest,
    ModelLoaded,
    ModelState,
    ReplyFinished,
)
from mergechat.core.dtypes import DType
from mergechat.core.engine.engine import Engine
from mergechat.core.engine.process import ProcessEngine
from mergechat.core.settings.generation import GenerationSettings

#: Seconds a model load or one reply may take before the worker gives up.
TIMEOUT_S = 600.0


def text_digest(text: str) -> str:
    """Short hash of a reply, to check that every side produced the same text."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class TimedEngine(Engine):
    """The real `Engine`, noting when each `generate` is called (its ``requested_at``)."""

    def __init__(self, sink: EventSink) -> None:
        super().__init__(sink)
        self.generate_calls: list[float] = []

    def generate(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        *,
        continue_last: bool = False,
    ) -> int:
        self.generate_calls.append(time.perf_counter())
        return super().generate(messages, settings, continue_last=continue_last)


class TimedProcessEngine(ProcessEngine):
    """The engine in its own process (the app's default), noting when each `generate` is called.

    Its `ReplyStats` are timed in the engine process from when the command arrived there; the
    pipe between takes microseconds.
    """

    def __init__(self, sink: EventSink) -> None:
        super().__init__(sink)
        self.generate_calls: list[float] = []

    def generate(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        *,
        continue_last: bool = False,
    ) -> int:
        self.generate_calls.append(time.perf_counter())
        return super().generate(messages, settings, continue_last=continue_last)


class _Route:
    """An event sink whose destination can change (one engine serves many one-shot sessions)."""

    def __init__(self, target: EventSink) -> None:
        self.target = target
        self.last_finished: ReplyFinished | None = None

    def __call__(self, event: EngineEvent) -> None:
        if isinstance(event, ReplyFinished):
            self.last_finished = event
        self.target(event)


class _LoadedEngine:
    """`EngineClient` for one `run_oneshot` call over an engine that already holds the model:
    load answers at once, shutdown leaves the engine running for the next call."""

    def __init__(self, engine: TimedEngine, state: ModelState, sink: EventSink) -> None:
        self._engine = engine
        self._state = state
        self._sink = sink

    def start(self) -> None:
        pass

    def load(self, request: LoadRequest) -> None:
        self._sink(ModelLoaded(self._state))

    def generate(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        *,
        continue_last: bool = False,
    ) -> int:
        return self._engine.generate(messages, settings, continue_last=continue_last)

    def cancel(self) -> None:
        self._engine.cancel()

    def switch_dtype(self, dtype: DType) -> None:
        raise NotImplementedError

    def detect(self, model_path: Path | None = None, device: str = "auto") -> None:
        raise NotImplementedError

    def shutdown(self, timeout: float = 5.0) -> None:
        pass


def _load(engine: Engine, events: queue.Queue[EngineEvent], request: LoadRequest) -> ModelState:
    engine.start()
    engine.load(request)
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        event = events.get(timeout=TIMEOUT_S)
        if isinstance(event, ModelLoaded):
            return event.state
        if isinstance(event, LoadFailed):
            raise SystemExit(f"load failed: {event.message}")
    raise SystemExit("the model did not load in time")


class OneShotDriver:
    """mergechat's one-shot mode (`mergechat.cli.oneshot.run_oneshot`, as the CLI calls it) with the
    model loaded once; each run streams one reply to a discarded output and saves it in the
    history (the CLI's default), like ``mergechat PATH --prompt TEXT``."""

    def __init__(self, model: Path, device: str, dtype: str, prompt: str, tokens: int) -> None:
        self.events: queue.Queue[EngineEvent] = queue.Queue()
        self.route = _Route(self.events.put)
        self.engine = TimedEngine(self.route)
        request = LoadRequest(model, device=device, dtype=dtype)  # type: ignore[arg-type]
        self.state = _load(self.engine, self.events, request)
        self.load_request = request
        self.prompt = prompt
        self.settings = GenerationSettings(max_new_tokens=tokens, temperature=0.0)
        self.out = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the worker

    def _factory(self, sink: EventSink) -> _LoadedEngine:
        self.route.target = sink
        return _LoadedEngine(self.engine, self.state, sink)

    def run(self) -> dict[str, Any]:
        """One prompt through ``run_oneshot``; times from the call to its return."""
        from mergechat.cli.oneshot import OneShotRequest, run_oneshot

        request = OneShotRequest(self.load_request, self.prompt, self.settings)
        self.route.last_finished = None
        cpu0 = time.thread_time()
        start = time.perf_counter()
        code = run_oneshot(request, out=self.out, err=self.out, engine_factory=self._factory)
        end = time.perf_counter()
        main_cpu = time.thread_time() - cpu0
        finished = self.route.last_finished
        if code != 0 or finished is None:
            raise SystemExit(f"run_oneshot returned {code} without a finished reply")
        return _result(finished, start, self.engine.generate_calls[-1], end, main_cpu)

    def real_dtype(self) -> str:
        return self.state.dtype


def _result(
    finished: ReplyFinished, start: float, generate_at: float, end: float, main_cpu: float
) -> dict[str, Any]:
    """One run's figures: outside times (from ``start``) plus the engine's own stats."""
    stats = finished.stats
    total = end - start
    return {
        "new_tokens": stats.new_tokens,
        "prompt_tokens": stats.prompt_tokens,
        # The first token's time, on the engine's clock, seen from the run's start.
        "ttft_s": generate_at + stats.ttft_s - start,
        "total_s": total,
        "decode_tps": stats.decode_tokens_per_s,
        "e2e_tps": stats.new_tokens / total,
        "engine_ttft_s": stats.ttft_s,
        "engine_total_s": stats.total_s,
        "request_delay_s": generate_at - start,
        "main_thread_cpu_s": main_cpu,
        "finish": finished.finish,
        "text_sha": text_digest(finished.text),
    }


class AppDriver:
    """The real `MergechatApp` and engine driven headless through ``App.run_test``: each run
    starts a new chat (ctrl+n), pastes the prompt into the prompt input, presses Enter and waits
    until the app has handled the reply's `ReplyFinished`.

    One asyncio task holds the ``run_test`` session; each `run` hands it a command and runs the
    loop until the answer. Between runs the loop stands still, so the app takes no CPU from the
    other sides' runs.
    """

    def __init__(self, model: Path, device: str, dtype: str, prompt: str, tokens: int) -> None:
        from mergechat.ui.app import MergechatApp
        from mergechat.ui.messages import EngineEventMessage
        from mergechat.ui.options import AppOptions

        self.prompt = prompt
        self.engines: list[TimedEngine | TimedProcessEngine] = []
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        handled: list[tuple[float, float, ReplyFinished]] = []
        self.handled = handled
        self.finished = asyncio.Event()
        finished = self.finished

        class App(MergechatApp):
            def on_engine_event_message(self, message: EngineEventMessage) -> None:
                super().on_engine_event_message(message)
                if isinstance(message.event, ReplyFinished):
                    handled.append((time.perf_counter(), time.thread_time(), message.event))
                    finished.set()

        overrides: dict[str, object] = {"max_new_tokens": tokens, "temperature": 0.0}
        options = AppOptions(
            model_path=model, device=device, dtype=dtype, generation_overrides=overrides
        )
        self.app = App(options, engine_factory=self._engine)
        self._commands: asyncio.Queue[tuple[str, asyncio.Future[Any]]] = asyncio.Queue()
        self._session = self.loop.create_task(self._serve())
        self._call("load")

    def _engine(self, sink: EventSink) -> TimedEngine | TimedProcessEngine:
        # What the app runs: the engine process, or with MERGECHAT_ENGINE=thread the thread.
        thread = os.environ.get("MERGECHAT_ENGINE", "").strip().lower() == "thread"
        engine = TimedEngine(sink) if thread else TimedProcessEngine(sink)
        self.engines.append(engine)
        return engine

    def _call(self, command: str) -> Any:
        """Hand ``command`` to the session task; run the loop until it is answered."""
        future: asyncio.Future[Any] = self.loop.create_future()
        self._commands.put_nowait((command, future))
        done, _ = self.loop.run_until_complete(
            asyncio.wait([future, self._session], return_when=asyncio.FIRST_COMPLETED)
        )
        if future not in done:  # the session ended: show why
            self._session.result()
            raise SystemExit("the app session ended")
        return future.result()

    async def _serve(self) -> None:
        async with self.app.run_test(headless=True, size=(100, 30), notifications=True) as pilot:
            self.pilot = pilot
            # Textual captures stdout while it runs; the worker protocol needs the real one.
            sys.stdout = sys.__stdout__
            while True:
                command, future = await self._commands.get()
                if command == "quit":
                    future.set_result(None)
                    return
                try:
                    action = self._one() if command == "run" else self._load()
                    future.set_result(await action)
                except BaseException as error:  # handed to the caller, raised there
                    future.set_exception(error)

    def _state(self) -> str:
        chat = self.app.chat
        focused = type(self.app.focused).__name__ if self.app.focused else None
        return f"phase {chat.phase!r}, prompt {chat.prompt.text!r}, focus {focused}"

    async def _until(self, condition: Callable[[], bool], what: str, limit: float) -> None:
        deadline = time.monotonic() + limit
        while not condition():
            if self.app.chat.phase == "error":
                raise SystemExit(f"the app failed while waiting for {what}: {self._state()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}: {self._state()}")
            await self.pilot.pause(0.02)

    async def _load(self) -> None:
        app = self.app

        def loaded() -> bool:
            # The app asks for the detector's verdicts after the load: let that finish too.
            return app.model_state is not None and app.capabilities is not None

        await self._until(loaded, "the model to load", TIMEOUT_S)
        await self.pilot.pause()

    async def _one(self) -> dict[str, Any]:
        from textual import events

        chat = self.app.chat
        if chat.conversation.messages:
            await self.pilot.press("ctrl+n")
            await self._until(lambda: not chat.conversation.messages, "a new chat", 30)
        driver = self.app._driver
        assert driver is not None
        # A bracketed paste and Enter, as a terminal delivers them to the app.
        driver.send_message(events.Paste(self.prompt))
        await self._until(lambda: chat.prompt.text == self.prompt, "the pasted prompt", 30)
        await self.pilot.pause()
        seen = len(self.handled)
        self.finished.clear()
        cpu0 = time.thread_time()
        start = time.perf_counter()
        # Not the pilot's press: it would poll for idleness while the reply streams.
        driver.send_message(events.Key("enter", "\r"))
        try:
            await asyncio.wait_for(self.finished.wait(), TIMEOUT_S)
        except asyncio.TimeoutError:
            raise SystemExit(f"no reply in {TIMEOUT_S} s: {self._state()}") from None
        end, cpu1, finished = self.handled[seen]
        result = _result(finished, start, self.engines[-1].generate_calls[-1], end, cpu1 - cpu0)
        await self._until(lambda: chat.phase == "ready", "the app to be ready", 30)
        await self.pilot.pause()  # the final render, untimed
        return result

    def run(self) -> dict[str, Any]:
        """One prompt as a user sends it; times from the Enter key to the reply handled."""
        result: dict[str, Any] = self._call("run")
        return result

    def real_dtype(self) -> str:
        state = self.app.model_state
        return state.dtype if state is not None else "?"

    def close(self) -> None:
        """Quit the app (the engine shuts down with it)."""
        self._call("quit")
        self.loop.run_until_complete(self._session)
        self.loop.close()
