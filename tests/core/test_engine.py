"""The engine thread: load (auto and fp16), NaN guard, failures, cancel, thread ownership."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_harness import TIMEOUT, Harness, ask, probe_cache, running
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

from mergechat.core.api import (
    CapabilitiesReady,
    EngineEvent,
    EngineNotice,
    LoadFailed,
    LoadProgress,
    LoadRequest,
    ModelLoaded,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    SwitchFinished,
)
from mergechat.core.engine.engine import Engine
from mergechat.core.settings.generation import GenerationSettings

STAGES = ["inspecting", "probing", "reading", "loading", "casting", "warm-up"]
HALF = "\"addmm_impl_cpu_\" not implemented for 'Half'"


def _parameter_dtype(harness: Harness) -> str:
    # Test-only peek at the engine's model; safe because the engine is idle between commands.
    loaded = harness.engine._loaded
    assert loaded is not None
    return str(next(loaded.model.parameters()).dtype).removeprefix("torch.")


def test_merge_loads_with_auto_dtype_and_reports_what_it_got(
    tiny_merge_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running(tmp_path_factory) as harness:
        loaded = harness.load(tiny_merge_dir)
        state = loaded.state
        assert state.dtype == _parameter_dtype(harness)
        assert state.disk_dtype == "bfloat16"
        assert state.device == "cpu" and not state.offloaded
        assert state.merge_method == "dare_ties"
        assert state.context_max == 512 and state.reason
        assert harness.engine.state == state
        progress = [e for e in harness.events if isinstance(e, LoadProgress)]
        stages = [e.stage for e in progress if e.stage not in ("reading", "probing")]
        # The warm-up is two steps: the NaN/inf check's forward pass, then a timed short reply.
        assert list(dict.fromkeys(stages)) == [s for s in STAGES if s not in ("reading", "probing")]
        assert [e.detail for e in progress if e.stage == "warm-up"][-1] == "timing a short reply"
        probing = [e for e in progress if e.stage == "probing"]
        assert probing and probing[0].detail.startswith("measuring devices and dtypes")
        assert [e.fraction for e in progress] == sorted(e.fraction for e in progress)
        reading = [e for e in progress if e.stage == "reading"]
        assert reading and reading[-1].detail.startswith("shard 1/1, ")
        assert reading[-1].detail.endswith(("KiB", "MiB"))
        _, finished = harness.reply(ask("Hello"), GenerationSettings(max_new_tokens=4))
        assert finished.stats.dtype == state.dtype


def test_bf16_merge_loads_in_float16_when_asked(
    tiny_merge_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running(tmp_path_factory) as harness:
        loaded = harness.load(tiny_merge_dir, dtype="float16", device="cpu")
        assert loaded.state.dtype == "float16" == _parameter_dtype(harness)
        assert loaded.state.disk_dtype == "bfloat16"
        # Never a silent bf16 -> fp16 move: the load says so.
        assert any("float16" in w for w in loaded.warnings), loaded.warnings
        _, finished = harness.reply(ask("Hello"), GenerationSettings(max_new_tokens=4))
        assert finished.stats.new_tokens >= 1 and finished.stats.dtype == "float16"


def test_nan_weights_fail_the_load_by_name(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    broken = tmp_path_factory.mktemp("nan") / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = load_file(broken / "model.safetensors")
    name = "model.layers.0.mlp.down_proj.weight"
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with running(tmp_path_factory) as harness:
        harness.engine.load(LoadRequest(broken, dtype="bfloat16"))
        failed = harness.wait_for(LoadFailed, ModelLoaded)
        assert isinstance(failed, LoadFailed)
        assert "weights produce NaN/inf in bfloat16" in failed.message
        assert failed.state is None and harness.engine.state is None
        # The thread survived: a good model loads next.
        assert harness.load(tiny_model_dir, dtype="bfloat16").state.dtype == "bfloat16"


def test_bad_path_or_device_keeps_the_previous_model(
    tiny_model_dir: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running(tmp_path_factory, tiny_model_dir) as harness:
        before = harness.engine.state
        harness.engine.load(LoadRequest(tmp_path / "missing"))
        failed = harness.wait_for(LoadFailed, ModelLoaded)
        assert isinstance(failed, LoadFailed)
        assert failed.state == before and harness.engine.state == before
        if not torch.cuda.is_available():
            harness.engine.load(LoadRequest(tiny_model_dir, device="cuda:0"))
            missing = harness.wait_for(LoadFailed, ModelLoaded)
            assert isinstance(missing, LoadFailed) and "cuda" in missing.message
            assert missing.state == before
        _, finished = harness.reply(ask("Hi"), GenerationSettings(max_new_tokens=3))
        assert finished.stats.new_tokens >= 1


def test_an_error_in_generate_fails_that_reply_only(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_forward = LlamaForCausalLM.forward
    calls = {"n": 0}

    def forward_fails_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError(HALF)
        return real_forward(self, *args, **kwargs)

    with running(tmp_path_factory, tiny_model_dir) as harness:
        monkeypatch.setattr(LlamaForCausalLM, "forward", forward_fails_once)
        request_id = harness.engine.generate(ask("Hello"), GenerationSettings(max_new_tokens=4))
        started = harness.wait_for(ReplyStarted)
        failed = harness.wait_for(ReplyFailed, ReplyFinished)
        assert isinstance(failed, ReplyFailed) and failed.request_id == request_id
        assert "float16 matmul is not supported on this CPU with this torch" in failed.message
        assert failed.hint is not None and "--dtype auto" in failed.hint
        assert started.stream.closed
        _, finished = harness.reply(ask("Hello again"), GenerationSettings(max_new_tokens=4))
        assert finished.stats.new_tokens >= 1


def test_generate_without_a_model_fails_cleanly(tmp_path_factory: pytest.TempPathFactory) -> None:
    with running(tmp_path_factory) as harness:
        request_id = harness.engine.generate(ask("Hello"), GenerationSettings())
        failed = harness.wait_for(ReplyFailed)
        assert failed.request_id == request_id and "no model" in failed.message


def test_only_the_engine_thread_runs_torch(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: set[int] = set()

    def record(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            seen.add(threading.get_ident())
            return original(*args, **kwargs)

        return wrapper

    # Module calls (every forward), module casts and tensor copies/casts: the torch work.
    monkeypatch.setattr(torch.nn.Module, "__call__", record(torch.nn.Module.__call__))
    monkeypatch.setattr(torch.nn.Module, "to", record(torch.nn.Module.to))
    monkeypatch.setattr(torch.Tensor, "to", record(torch.Tensor.to))
    with running(tmp_path_factory, tiny_model_dir) as harness:
        harness.reply(ask("Hello"), GenerationSettings(max_new_tokens=4))
        assert harness.switch("float32").state is not None
        assert harness.switch("float16").state is not None
        engine_thread = harness.engine.thread_ident
    assert seen == {engine_thread}
    assert engine_thread != threading.get_ident()


def test_fifty_quick_prompts_each_answered_or_cancelled_and_no_threads_leak(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    threads_before = set(threading.enumerate())
    events: list[EngineEvent] = []
    done = threading.Event()
    ids: list[int] = []

    def sink(event: EngineEvent) -> None:
        events.append(event)
        finished = {e.request_id for e in events if isinstance(e, ReplyFinished | ReplyFailed)}
        if len(ids) == 50 and finished >= set(ids):
            done.set()

    engine = Engine(sink, probe_cache=probe_cache(tmp_path_factory))
    engine.start()
    engine.load(LoadRequest(tiny_model_dir))
    settings = GenerationSettings(max_new_tokens=3)
    for i in range(50):
        ids.append(engine.generate(ask(f"Prompt {i}"), settings))
        if i % 7 == 3:
            engine.cancel()
    sink(EngineNotice("all queued", "info"))  # re-check completion now that all ids exist
    assert done.wait(TIMEOUT)
    engine.shutdown(timeout=30)
    by_id = {e.request_id: e for e in events if isinstance(e, ReplyFinished | ReplyFailed)}
    assert sorted(by_id) == ids
    assert all(isinstance(e, ReplyFinished) for e in by_id.values())
    finishes = {e.finish for e in by_id.values() if isinstance(e, ReplyFinished)}
    assert "stopped" in finishes and finishes & {"length", "complete"}
    started = [e.request_id for e in events if isinstance(e, ReplyStarted)]
    assert started == ids, "every request is started (or answered as stopped) in order"
    assert all(e.stream.closed for e in events if isinstance(e, ReplyStarted))
    assert not any(isinstance(e, LoadFailed) for e in events)
    assert set(threading.enumerate()) <= threads_before


def test_cancel_drops_queued_replies(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running(tmp_path_factory, tiny_model_dir) as harness:
        settings = GenerationSettings(max_new_tokens=200)
        ids = [harness.engine.generate(ask(f"Story {i}"), settings) for i in range(3)]
        harness.engine.cancel()
        finished = [harness.wait_for(ReplyFinished) for _ in ids]
        assert [f.request_id for f in finished] == ids
        assert all(f.finish == "stopped" for f in finished)
        assert all(f.stats.new_tokens < 200 for f in finished)
        # A cancel applies only to replies asked for before it.
        _, after = harness.reply(ask("Next"), GenerationSettings(max_new_tokens=3))
        assert after.finish != "stopped"


def test_detect_reports_capabilities_and_an_assessment(
    tiny_merge_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running(tmp_path_factory) as harness:
        harness.engine.detect(tiny_merge_dir, "cpu")
        ready = harness.wait_for(CapabilitiesReady)
        assert ready.capabilities.device("cpu") is not None
        assert ready.assessment is not None
        assert ready.assessment.recommendation.device == "cpu"
        harness.engine.detect()
        assert harness.wait_for(CapabilitiesReady).assessment is None
        harness.engine.detect(tiny_merge_dir / "nope")
        # The probes still arrive (a settings screen waiting on them stops "measuring"), then
        # the path's error as a notice.
        without = harness.wait_for(CapabilitiesReady)
        assert without.assessment is None and without.capabilities.device("cpu") is not None
        notice = harness.wait_for(EngineNotice)
        assert notice.level == "error" and "does not exist" in notice.message


def test_a_raising_sink_does_not_kill_the_thread(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    received: list[EngineEvent] = []

    def sink(event: EngineEvent) -> None:
        received.append(event)
        if isinstance(event, LoadProgress):
            raise RuntimeError("UI went away")

    engine = Engine(sink, probe_cache=probe_cache(tmp_path_factory))
    engine.start()
    engine.load(LoadRequest(tiny_model_dir))
    engine.load(LoadRequest(tiny_model_dir / "missing"))
    engine.shutdown(timeout=30)
    assert not engine._thread or not engine._thread.is_alive()
    failures = [e for e in received if isinstance(e, LoadFailed)]
    assert len(failures) == 2 and "UI went away" in failures[0].message


def test_gguf_file_loads_dequantised_and_switches_by_reload(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from fixtures.tiny_gguf import build_tiny_gguf

    path = build_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    with running(tmp_path_factory) as harness:
        loaded = harness.load(path, dtype="float32")
        assert loaded.state.disk_dtype == "float32" == loaded.state.dtype
        _, finished = harness.reply(ask("Hello"), GenerationSettings(max_new_tokens=4))
        assert finished.stats.new_tokens >= 1
        switched = harness.switch("bfloat16")
        assert isinstance(switched, SwitchFinished), switched
        assert switched.method == "reload" and switched.state.dtype == "bfloat16"


@pytest.mark.parametrize(
    ("device_map", "label", "main", "offloaded"),
    [
        ({"": 0}, "cuda:0", "cuda:0", False),
        (
            {"model.embed_tokens": 0, "model.layers": 0, "lm_head": "cpu"},
            "cuda:0+cpu offload",
            "cuda:0",
            True,
        ),
        ({"model.layers.0": 1, "model.layers.1": 0}, "cuda:1,cuda:0", "cuda:1", True),
        ({"model": 0, "lm_head": "disk"}, "cuda:0+disk offload", "cuda:0", True),
        ({"": "cpu"}, "cpu", "cpu", False),
        ({"": "mps"}, "mps", "mps", False),
    ],
)
def test_device_label_from_the_device_map(
    device_map: dict[str, Any], label: str, main: str, offloaded: bool
) -> None:
    from types import SimpleNamespace

    from mergechat.core.engine.model_facts import device_label

    model = SimpleNamespace(hf_device_map=device_map)
    assert device_label(model) == (label, main, offloaded)


def test_a_device_map_recommendation_loads_through_accelerate(tiny_model_dir: Path) -> None:
    from mergechat.core.detect.capabilities import Recommendation
    from mergechat.core.engine.loader import load_weights
    from mergechat.core.model.inspection import inspect_model

    rec = Recommendation("cpu", "bfloat16", "auto", "test: spread with accelerate")
    loaded = load_weights(inspect_model(tiny_model_dir), rec, trust_remote_code=False)
    # On a CPU-only machine accelerate places everything on the CPU: no offload to report.
    assert (loaded.state.device, loaded.state.dtype, loaded.state.offloaded) == (
        "cpu",
        "bfloat16",
        False,
    )
    assert loaded.exact and loaded.state.reason == rec.reason
