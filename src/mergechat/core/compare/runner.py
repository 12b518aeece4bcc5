"""`CompareRunner`: one prompt to several models through one `EngineClient` each.

The runner decides the placement from the detector's memory fit, loads the models together or
one at a time, streams every reply with its stats, then measures where each reply parts from the
base model's and how often each model's top-1 token agrees with the merge's reply. It never
imports torch or Textual: clients come from an injected factory, results go to a callback.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

from mergechat.core.api import (
    CapabilitiesReady,
    ChatMessage,
    EngineClient,
    EngineEvent,
    EventSink,
    LoadRequest,
    ModelState,
)
from mergechat.core.compare.column import Column
from mergechat.core.compare.events import (
    CompareFinished,
    CompareModelDone,
    ComparePhase,
    ComparePlaced,
    CompareSink,
    CompareSwitched,
    ModelResult,
    Phase,
)
from mergechat.core.compare.measured import measured_results, token_ids
from mergechat.core.compare.placement import Placement, place, switched
from mergechat.core.compare.plan import CompareModel, ComparePlan, same_tokenizer
from mergechat.core.dtypes import DType
from mergechat.core.settings.generation import GenerationSettings

#: Makes the client for one model: a local engine for a path, a remote client for a URL.
ClientFactory = Callable[[CompareModel, EventSink], EngineClient]
Messages = tuple[ChatMessage, ...]
#: How often streams are drained while replies run.
POLL_S = 0.05


class CompareRunner:
    """Runs a `ComparePlan`: `prepare` once, then `ask` as often as wanted; `close` at the end.

    ``on_event`` is called on the thread that runs `prepare`/`ask` (a view posts it on);
    `stop` may be called from any thread. ``one_at_a_time`` loads one model at a time even when
    all would fit; ``dtype`` puts every local model in that precision ("auto" or None: each its
    recommended one, or one for all with ``same_precision``).
    """

    def __init__(
        self,
        plan: ComparePlan,
        factory: ClientFactory,
        *,
        same_precision: bool = True,
        device: str = "auto",
        dtype: DType | Literal["auto"] | None = None,
        trust_remote_code: bool = False,
        one_at_a_time: bool = False,
        on_event: CompareSink | None = None,
    ) -> None:
        self.plan = plan
        self._factory = factory
        self._same_precision = same_precision
        self._device = device
        self._dtype = None if dtype == "auto" else dtype
        self._trust_remote_code = trust_remote_code
        self._one_at_a_time = one_at_a_time
        self._sink = on_event or (lambda _event: None)
        self._events: queue.Queue[tuple[int, EngineEvent]] = queue.Queue()
        self._columns = [Column(i, m) for i, m in enumerate(plan.models)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.placement: Placement | None = None

    # -- any thread -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every reply now and skip the models not answered yet (a load runs to its end)."""
        self._stop.set()
        with self._lock:
            clients = [c.client for c in self._columns if c.client is not None]
        for client in clients:
            client.cancel()

    def detection(self, index: int) -> tuple[CapabilitiesReady | None, ModelState | None]:
        """What the detector said about model ``index`` (None: not inspected, or served) and
        the model loaded now, read-only for a view's precision menu."""
        col = self._columns[index]
        caps, assessment, state = col.caps, col.assessment, col.state
        ready = None if caps is None or assessment is None else CapabilitiesReady(caps, assessment)
        return ready, state

    # -- runner thread ----------------------------------------------------------------------------
    def prepare(self) -> Placement:
        """Ask the detector about every local model, decide the placement and, when all fit
        together, load them all (one after the other); served models are connected at once.

        A `stop` skips the steps not begun (a detection or load running ends first): without
        every detection no placement is kept (the next `ask` prepares again), and a model left
        unloaded is loaded by the next `ask`."""
        for col in self._columns:
            if col.model.remote or not col.usable or col.assessment is not None:
                continue
            if self._stop.is_set():
                self._phase(col, "stopped", "not inspected: stopped")
                continue
            self._phase(col, "detecting")
            self._client(col).detect(col.model.path, self._device)
            col.begin("detect")
            self._wait([col])
        caps = next((c.caps for c in reversed(self._columns) if c.caps is not None), None)
        usable = [c.usable for c in self._columns]
        self.placement = place(
            [c.assessment if ok else None for c, ok in zip(self._columns, usable, strict=True)],
            [c.model.remote and ok for c, ok in zip(self._columns, usable, strict=True)],
            caps,
            same_precision=self._same_precision,
            dtype=self._dtype,
        )
        if self._one_at_a_time and self.placement.together:
            reason = "one model at a time (as asked): load, answer, unload"
            self.placement = replace(self.placement, together=False, parallel=False, reason=reason)
        placement = self.placement
        if any(c.usable and not c.model.remote and c.assessment is None for c in self._columns):
            self.placement = None  # stopped before every detection: not a placement to keep
            return placement
        self._sink(ComparePlaced(placement))
        self._load_kept(placement)
        for col in self._columns:
            if col.usable and not self._kept(placement, col):
                self._phase(col, "waiting", "loaded when its turn comes")
        return placement

    def ask(self, prompt: str, settings: GenerationSettings) -> tuple[ModelResult, ...]:
        """Answer ``prompt`` with every model; return the results in column order."""
        self._stop.clear()
        placement = self.placement or self.prepare()
        self._load_kept(placement)  # the loads a stop skipped in `prepare`
        started = time.perf_counter()
        messages = (ChatMessage("user", prompt),)
        for col in self._columns:
            # One at a time, a served model stays connected from `prepare`: its time counts.
            col.new_prompt(keep_load=not placement.together and col.model.remote)
        if placement.parallel:
            self._answer([c for c in self._columns if c.usable], messages, settings)
        for col in self._columns:
            if not col.usable or placement.parallel:
                continue
            if self._stop.is_set():
                self._skip(col)
                continue
            one_at_a_time = not placement.together and not col.model.remote
            if one_at_a_time:
                self._load(col)
            self._answer([col], messages, settings)
            if one_at_a_time:
                self._score(col, messages, settings)
                self._unload(col)
        if placement.together:
            for col in self._columns:
                self._score(col, messages, settings)
        results = measured_results(self._columns, self.plan.base, by_token=self._by_token)
        for result in results:
            self._sink(CompareModelDone(result))
        stopped = self._stop.is_set()
        self._sink(CompareFinished(results, time.perf_counter() - started, stopped))
        return results

    def switch(self, index: int, dtype: DType) -> None:
        """Put model ``index`` in ``dtype``: a loaded model switches now (this blocks until its
        engine answers), one not loaded now loads in ``dtype`` when its turn comes."""
        placement = self.placement or self.prepare()
        col = self._columns[index]
        if (error := col.cannot_switch()) is not None:
            self._sink(CompareSwitched(index, col.state, error))
            return
        self.placement = switched(placement, index, dtype, col.assessment)
        if col.client is None or col.state is None:
            self._sink(CompareSwitched(index, None))
            self._phase(col, "waiting", f"loads in {dtype} when its turn comes")
            return
        self._phase(col, "switching", f"to {dtype}")
        col.client.switch_dtype(dtype)
        col.begin("switch")
        self._wait([col])
        if col.state is not None and col.state.dtype != dtype:  # kept or got another precision
            self.placement = switched(self.placement, index, col.state.dtype, col.assessment)

    def switch_all(self, dtype: DType) -> None:
        """Every local model to ``dtype``, one after the other ("same precision for all");
        a served model keeps the server's precision and says so."""
        self._dtype = dtype
        for col in self._columns:
            self.switch(col.index, dtype)

    def close(self) -> None:
        """Shut every client down (unloads the models)."""
        for col in self._columns:
            self._unload(col, quiet=True)

    # -- steps ----------------------------------------------------------------------------------
    @functools.cached_property
    def _by_token(self) -> bool:
        """Whether every model has the same vocabulary, so replies compare token by token; read
        once (it parses each tokenizer file), on the runner thread."""
        return same_tokenizer(self.plan)

    @staticmethod
    def _kept(placement: Placement, col: Column) -> bool:
        """Whether ``col`` stays loaded between prompts (all together, or a served model)."""
        return placement.together or col.model.remote

    def _load_kept(self, placement: Placement) -> None:
        """Load the kept models not loaded yet, one after the other, until a stop."""
        for col in self._columns:
            if not col.usable or col.state is not None or not self._kept(placement, col):
                continue
            if self._stop.is_set():
                self._phase(col, "stopped", "not loaded: stopped")
            else:
                self._load(col)

    def _client(self, col: Column) -> EngineClient:
        if col.client is None:
            index = col.index
            client = self._factory(col.model, lambda event: self._events.put((index, event)))
            client.start()
            with self._lock:
                col.client = client
        return col.client

    def _load(self, col: Column) -> None:
        assert self.placement is not None
        spot = self.placement.models[col.index]
        if spot is None or not col.usable:
            return
        request = LoadRequest(
            col.model.path,
            device=spot.device,
            dtype=spot.dtype,
            trust_remote_code=self._trust_remote_code,
        )
        self._phase(col, "loading")
        self._client(col).load(request)
        col.begin("load")
        self._wait([col])

    def _unload(self, col: Column, *, quiet: bool = False) -> None:
        with self._lock:
            client, col.client = col.client, None
        if client is not None:
            started = time.perf_counter()
            client.shutdown()
            col.state = None
            col.unload_s = time.perf_counter() - started
            if not quiet:
                self._phase(col, "unloaded")

    def _answer(
        self,
        cols: Sequence[Column],
        messages: Messages,
        settings: GenerationSettings,
    ) -> None:
        running = [c for c in cols if c.usable and c.state is not None and not self._stop.is_set()]
        asked = {c.index for c in running}
        for col in cols:
            if col.usable and col.index not in asked and self._stop.is_set():
                self._skip(col)
        for col in running:
            col.begin("reply", self._client(col).generate(messages, settings))
            self._phase(col, "answering")
        self._wait(running)
        for col in running:
            self._phase(col, "failed" if col.reply_error else "done", col.reply_error or "")

    def _score(self, col: Column, messages: Messages, settings: GenerationSettings) -> None:
        """Teacher-forced agreement of ``col`` with the reference (merge) reply."""
        reference = self._columns[self.plan.reference]
        if col.client is None or col.state is None or self._stop.is_set():
            return
        if not reference.reply or reference.reply_error or reference.finish is None:
            col.agreement_note = f"no reply from {reference.model.name} to score against"
            return
        scorer = getattr(col.client, "score_agreement", None)
        if scorer is None:
            col.agreement_note = "this engine cannot score agreement"
            return
        self._phase(col, "scoring")
        ids = token_ids(reference.stream) if self._by_token else None
        col.begin("score", scorer(messages, settings, reference.reply, reference_ids=ids))
        self._wait([col])
        self._phase(col, "done")

    def _wait(self, cols: Sequence[Column]) -> None:
        """Route events until none of ``cols`` is busy, draining reply streams as they grow."""
        while any(c.busy for c in cols):
            try:
                index, event = self._events.get(timeout=POLL_S)
            except queue.Empty:
                index, event = -1, None
            if event is not None:
                for out in self._columns[index].apply(event):
                    self._sink(out)
            for col in cols:
                if (text := col.drain()) is not None:
                    self._sink(text)

    def _skip(self, col: Column) -> None:
        col.skip()
        self._phase(col, "stopped")

    def _phase(self, col: Column, phase: Phase, detail: str = "") -> None:
        self._sink(ComparePhase(col.index, phase, detail))
