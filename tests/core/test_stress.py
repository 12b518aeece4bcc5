"""Load under stress: 200 prompts back to back through the engine API the app uses.

The app talks to a `DeferredEngine` wrapping the real `Engine`; events reach the app from the
engine thread and the app drains each reply's stream. This test does the same from a consumer
thread: every prompt must be answered or cancelled, no thread may be left behind, and the
resident memory after the 200 prompts must be what it was after a warm-up of 20.
"""

from __future__ import annotations

import gc
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from engine_harness import TIMEOUT, ask, probe_cache

from mergechat.core.api import (
    EngineEvent,
    LoadFailed,
    LoadRequest,
    ModelLoaded,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
)
from mergechat.core.engine.engine import Engine
from mergechat.core.settings.generation import GenerationSettings
from mergechat.ui.engine_proxy import DeferredEngine

SETTINGS = GenerationSettings(max_new_tokens=4, temperature=0.0)
WARM_UP = 20
PROMPTS = 200
#: Resident memory may move this much between the warm-up and the end (allocator noise).
RSS_MARGIN_MB = 12.0


def rss_mb() -> float:
    """This process's resident set size in MiB, after a full collection."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Results:
    """What the consumer saw, by request id."""

    started: dict[int, ReplyStarted] = field(default_factory=dict)
    finished: dict[int, ReplyFinished] = field(default_factory=dict)
    failed: dict[int, ReplyFailed] = field(default_factory=dict)
    drained: dict[int, str] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)


class Consumer:
    """Plays the app's part: takes events off the engine thread and drains each stream."""

    def __init__(self) -> None:
        self.events: queue.SimpleQueue[EngineEvent | None] = queue.SimpleQueue()
        self.results = Results()
        self.ended = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="test-consumer")
        self._thread.start()

    def sink(self, event: EngineEvent) -> None:
        self.events.put(event)

    def _run(self) -> None:
        results = self.results
        while (event := self.events.get()) is not None:
            if isinstance(event, ReplyStarted):
                results.started[event.request_id] = event
                results.order.append(event.request_id)
                event.stream.drain()  # the app drains as tokens come, here at the start
            elif isinstance(event, ReplyFinished | ReplyFailed):
                stream = results.started[event.request_id].stream
                results.drained[event.request_id] = stream.text + stream.drain()
                with self.ended:
                    if isinstance(event, ReplyFinished):
                        results.finished[event.request_id] = event
                    else:
                        results.failed[event.request_id] = event
                    self.ended.notify_all()
            elif isinstance(event, ModelLoaded | LoadFailed):
                with self.ended:
                    self.loaded = event
                    self.ended.notify_all()

    def wait(self, request_ids: list[int]) -> None:
        """Until every one of ``request_ids`` has ended."""
        results = self.results

        def ended() -> bool:
            return all(i in results.finished or i in results.failed for i in request_ids)

        with self.ended:
            assert self.ended.wait_for(ended, TIMEOUT)

    def close(self) -> None:
        self.events.put(None)
        self._thread.join(TIMEOUT)


def send_round(engine: DeferredEngine, consumer: Consumer, first: int, count: int) -> list[int]:
    """``count`` prompts, back to back, with cancels mixed in the ways a user makes them."""
    ids: list[int] = []
    i = first
    while i < first + count:
        pattern = i % 10
        if pattern == 3:
            # Three sent at once, then Escape: the running one stops, the queued ones are dropped.
            burst = [engine.generate(ask(f"Prompt {i + k}"), SETTINGS) for k in range(3)]
            engine.cancel()
            ids += burst
            consumer.wait(burst)
            i += 3
            continue
        request_id = engine.generate(ask(f"Prompt {i}"), SETTINGS)
        ids.append(request_id)
        if pattern == 7:
            engine.cancel()  # Escape right after Enter
        elif pattern == 9:
            # Escape once the reply has started streaming (or has already ended).
            deadline = time.monotonic() + TIMEOUT
            while request_id not in consumer.results.started and time.monotonic() < deadline:
                time.sleep(0.0005)
            engine.cancel()
        consumer.wait([request_id])
        i += 1
    return ids


@pytest.mark.slow
def test_two_hundred_prompts_each_answered_or_cancelled_no_leaks(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    threads_before = set(threading.enumerate())
    consumer = Consumer()
    engine = DeferredEngine()
    real = Engine(consumer.sink, probe_cache=probe_cache(tmp_path_factory))
    real.start()
    engine.attach(real)
    engine.load(LoadRequest(tiny_model_dir, dtype="bfloat16"))
    with consumer.ended:
        assert consumer.ended.wait_for(lambda: hasattr(consumer, "loaded"), TIMEOUT)
    assert isinstance(consumer.loaded, ModelLoaded), consumer.loaded

    started_at = time.perf_counter()
    warm_ids = send_round(engine, consumer, 0, WARM_UP)
    threads_warm = len(threading.enumerate())
    rss_warm = rss_mb()
    ids = send_round(engine, consumer, WARM_UP, PROMPTS)
    rss_after = rss_mb()
    threads_after = len(threading.enumerate())
    elapsed = time.perf_counter() - started_at
    engine.shutdown(timeout=30)
    consumer.close()
    assert not real._thread or not real._thread.is_alive()

    results = consumer.results
    every = warm_ids + ids
    assert len(ids) == PROMPTS and len(set(every)) == len(every)
    # Each answered or cancelled, none failed, each started once and in the order asked.
    assert not results.failed, list(results.failed.values())[:3]
    assert sorted(results.finished) == sorted(every) and results.order == every
    finishes = [results.finished[i].finish for i in ids]
    stopped = finishes.count("stopped")
    answered = len(ids) - stopped
    assert stopped >= PROMPTS // 10 and answered >= PROMPTS // 2, finishes
    for request_id in every:
        finished = results.finished[request_id]
        assert results.started[request_id].stream.closed
        assert results.drained[request_id] == finished.text  # the stream said the same
        if finished.finish != "stopped":
            assert 1 <= finished.stats.new_tokens <= SETTINGS.max_new_tokens
    assert threads_after == threads_warm
    assert set(threading.enumerate()) <= threads_before
    print(
        f"\n{PROMPTS} prompts after {WARM_UP} warm-up: {answered} answered, {stopped} cancelled "
        f"in {elapsed:.1f} s; RSS {rss_warm:.1f} -> {rss_after:.1f} MiB "
        f"({rss_after - rss_warm:+.1f}); threads {threads_warm} -> {threads_after}, "
        f"{len(threads_before)} before the engine and {len(threading.enumerate())} after"
    )
    assert rss_after - rss_warm < RSS_MARGIN_MB
