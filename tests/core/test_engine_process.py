"""The engine in its own process: every command through the pipes, a SIGKILL mid-reply, no torch.

The engine process runs the real thread `Engine` on the tiny models; this test process talks to
it only through `ProcessEngine`.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_harness import Harness, ask, probe_cache, running

from mergechat.core.api import (
    CapabilitiesReady,
    EngineCrashed,
    EngineEvent,
    LoadRequest,
    ModelLoaded,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    SwitchFinished,
)
from mergechat.core.engine.child import prune_logs
from mergechat.core.engine.process import ProcessEngine
from mergechat.core.engine.wire import RelayedStream
from mergechat.core.settings.generation import GenerationSettings

pytestmark = pytest.mark.slow

#: Long enough that a reply is still streaming when the test kills the engine.
LONG = GenerationSettings(max_new_tokens=3000, temperature=0.0)


@pytest.fixture(scope="module")
def long_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with a 4096-token context, for replies that take seconds."""
    from fixtures.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-long", context=4096)


class ProcessHarness(Harness):
    """`Harness` around a `ProcessEngine` (same helpers, events from the reader thread)."""

    def __init__(self, cache: Path) -> None:
        self.queue: queue.Queue[EngineEvent] = queue.Queue()
        self.events: list[EngineEvent] = []
        self.engine = ProcessEngine(self.queue.put, probe_cache=cache)  # type: ignore[assignment]
        self.engine.start()

    @property
    def process(self) -> ProcessEngine:
        assert isinstance(self.engine, ProcessEngine)
        return self.engine


@pytest.fixture
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessHarness]:
    harness = ProcessHarness(probe_cache(tmp_path_factory))
    try:
        yield harness
    finally:
        harness.close()


def _streaming(harness: ProcessHarness, request_id: int) -> RelayedStream:
    """Wait until reply ``request_id`` has sent some text; return its stream."""
    started = harness.wait_for(ReplyStarted)
    assert started.request_id == request_id
    stream = started.stream
    assert isinstance(stream, RelayedStream)
    deadline = time.monotonic() + 60
    while not stream.received_text:
        assert time.monotonic() < deadline, "no text arrived"
        time.sleep(0.005)
    return stream


def test_load_reply_detect_and_switch_through_the_process(
    harness: ProcessHarness, tiny_model_dir: Path
) -> None:
    loaded = harness.load(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert loaded.state.dtype == "bfloat16" and harness.process.state == loaded.state
    pid = harness.process.pid
    assert pid is not None and pid != os.getpid()

    started, finished = harness.reply(ask("Hello"), GenerationSettings(max_new_tokens=8))
    assert isinstance(started.stream, RelayedStream) and started.stream.closed
    assert started.stream.drain() == finished.text == started.stream.received_text
    assert 0 < started.stream.token_count <= finished.stats.new_tokens  # without an end token
    assert started.prompt_tokens > 0 and finished.stats.dtype == "bfloat16"

    harness.engine.detect(tiny_model_dir, "cpu")
    ready = harness.wait_for(CapabilitiesReady)
    assert ready.assessment is not None and ready.capabilities.devices

    switched = harness.switch("float32")
    assert isinstance(switched, SwitchFinished) and switched.state.dtype == "float32"
    assert harness.process.state is not None and harness.process.state.dtype == "float32"
    _, again = harness.reply(ask("Again"), GenerationSettings(max_new_tokens=4))
    assert again.stats.dtype == "float32"
    assert harness.process.pid == pid, "one process serves every command"


def test_the_relayed_stream_carries_the_models_token_ids(
    harness: ProcessHarness, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    greedy = GenerationSettings(max_new_tokens=12, temperature=0.0)
    harness.load(tiny_model_dir, device="cpu", dtype="float32")
    relayed, _ = harness.reply(ask("Hello"), greedy)
    with running(tmp_path_factory, tiny_model_dir, device="cpu", dtype="float32") as local:
        own, _ = local.reply(ask("Hello"), greedy)
    # The same ids the thread engine's own stream holds, batch after batch over the pipe.
    assert relayed.stream.model_ids and relayed.stream.token_ids() == own.stream.token_ids()
    assert own.stream.token_ids() and relayed.stream.drain() == own.stream.drain()


def test_ids_come_back_and_a_reply_without_a_model_fails(harness: ProcessHarness) -> None:
    first = harness.engine.generate(ask("Hi"), GenerationSettings())
    second = harness.engine.generate(ask("Hi"), GenerationSettings())
    assert (first, second) == (1, 2)
    failures = [harness.wait_for(ReplyFailed) for _ in range(2)]
    assert [f.request_id for f in failures] == [1, 2]
    assert all(f.message == "no model is loaded" for f in failures)


def test_cancel_stops_a_streaming_reply(harness: ProcessHarness, long_model_dir: Path) -> None:
    harness.load(long_model_dir, device="cpu", dtype="float32")
    request_id = harness.engine.generate(ask("Tell me a long story"), LONG)
    _streaming(harness, request_id)
    harness.engine.cancel()
    finished = harness.wait_for(ReplyFinished, ReplyFailed, timeout=30)
    assert isinstance(finished, ReplyFinished) and finished.request_id == request_id
    assert finished.finish == "stopped" and finished.stats.new_tokens < LONG.max_new_tokens


def test_sigkill_mid_reply_keeps_the_partial_text_and_a_new_load_works(
    harness: ProcessHarness, long_model_dir: Path, tiny_model_dir: Path
) -> None:
    harness.load(long_model_dir, device="cpu", dtype="float32")
    pid = harness.process.pid
    assert pid is not None
    request_id = harness.engine.generate(ask("Tell me a long story"), LONG)
    stream = _streaming(harness, request_id)
    os.kill(pid, signal.SIGKILL)

    failed = harness.wait_for(ReplyFailed, ReplyFinished, timeout=30)
    assert isinstance(failed, ReplyFailed) and failed.request_id == request_id
    assert failed.partial_text and failed.partial_text == stream.received_text
    assert "engine process stopped" in failed.message
    crashed = harness.wait_for(EngineCrashed, timeout=30)
    assert "SIGKILL" in crashed.message and crashed.log.endswith(f"engine-{pid}.log")
    assert harness.process.state is None and harness.process.pid is None
    assert stream.closed

    # The next load starts a fresh engine process; replies work again.
    loaded = harness.load(tiny_model_dir, device="cpu")
    assert harness.process.pid not in (None, pid)
    assert harness.process.state == loaded.state
    _, finished = harness.reply(ask("Still there?"), GenerationSettings(max_new_tokens=4))
    assert finished.stats.new_tokens > 0


def test_a_crash_between_replies_is_reported_once(
    harness: ProcessHarness, tiny_model_dir: Path
) -> None:
    harness.load(tiny_model_dir, device="cpu")
    pid = harness.process.pid
    assert pid is not None
    os.kill(pid, signal.SIGSEGV)
    crashed = harness.wait_for(EngineCrashed, timeout=30)
    assert "SIGSEGV" in crashed.message
    assert not any(isinstance(e, ReplyFailed) for e in harness.events)


def test_the_parent_process_never_imports_torch(tiny_model_dir: Path, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, queue, sys
        from pathlib import Path
        from mergechat.core.api import *
        from mergechat.core.engine.process import ProcessEngine

        events = queue.Queue()
        engine = ProcessEngine(events.put, probe_cache=Path({str(tmp_path / "probes.json")!r}))

        def wait(*kinds):
            while True:
                event = events.get(timeout=120)
                if isinstance(event, kinds):
                    return event

        engine.load(LoadRequest(Path({str(tiny_model_dir)!r}), device="cpu"))
        assert isinstance(wait(ModelLoaded, LoadFailed), ModelLoaded)
        engine.generate([ChatMessage("user", "Hi")], GenerationSettings(max_new_tokens=4))
        finished = wait(ReplyFinished, ReplyFailed)
        engine.detect(Path({str(tiny_model_dir)!r}), "cpu")
        wait(CapabilitiesReady)
        engine.switch_dtype("float32")
        wait(SwitchFinished, SwitchFailed)
        engine.shutdown(timeout=30)
        heavy = [m for m in ("torch", "transformers") if m in sys.modules]
        print(json.dumps({{"finished": type(finished).__name__, "heavy": heavy}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"finished": "ReplyFinished", "heavy": []}


def test_shutdown_ends_the_process_without_a_crash_notice(
    harness: ProcessHarness, tiny_model_dir: Path
) -> None:
    harness.engine.load(LoadRequest(tiny_model_dir, device="cpu"))
    harness.wait_for(ModelLoaded)
    pid = harness.process.pid
    assert pid is not None
    harness.engine.shutdown(timeout=30)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not any(isinstance(e, EngineCrashed) for e in list(harness.queue.queue))


def test_each_engine_process_writes_its_own_log(
    harness: ProcessHarness, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = ProcessEngine(lambda _event: None, probe_cache=probe_cache(tmp_path_factory))
    other.start()
    try:
        logs = [harness.process.log_path, other.log_path]
        pids = [harness.process.pid, other.pid]
        assert all(log is not None and log.is_file() for log in logs)
        assert [log.name for log in logs if log] == [f"engine-{pid}.log" for pid in pids]
        assert logs[0] != logs[1]
    finally:
        other.shutdown()


def test_only_the_newest_engine_logs_are_kept(tmp_path: Path) -> None:
    for age, pid in enumerate((11, 12, 13, 14)):
        log = tmp_path / f"engine-{pid}.log"
        log.write_text("log")
        os.utime(log, (1000 + age, 1000 + age))
    (tmp_path / "engine.log").write_text("an older release's log")
    prune_logs(tmp_path, 2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["engine-13.log", "engine-14.log", "engine.log"]
