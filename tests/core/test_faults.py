"""Faults on the engine thread: errors mid-reply, cancel during prefill, cancel during a switch.

Every test ends the same way: the engine thread is alive, the model is in one consistent state
(one dtype, read from the weights, that `Engine.state` reports), and the next prompt works.
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_harness import Harness, ask, running
from transformers import LlamaForCausalLM
from transformers.generation.logits_process import LogitsProcessorList

from fixtures.tiny_models import build_tiny_llama
from mergechat.core.api import (
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    SwitchFailed,
    SwitchFinished,
    SwitchStarted,
)
from mergechat.core.engine import generation, loader, switching
from mergechat.core.settings.generation import GenerationSettings

GREEDY = GenerationSettings(max_new_tokens=6, temperature=0.0)
# ~3000 tokens with the tests' tokenizer: prefill takes a measurable time on the tiny model.
LONG_TEXT = "The capital of France is Paris. " * 300
# ~400 tokens: fits the 512-token context of the session's tiny model.
MEDIUM_TEXT = "The capital of France is Paris. " * 40


@pytest.fixture(scope="module")
def harness(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running(tmp_path_factory, tiny_model_dir, dtype="bfloat16") as started:
        yield started


@pytest.fixture(scope="module")
def deep_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with 8 layers and an 8k context (8 points where a prefill can stop)."""
    out = tmp_path_factory.mktemp("deep") / "tiny-llama-deep"
    return build_tiny_llama(out, seed=0, context=8192, layers=8)


@pytest.fixture(scope="module")
def deep(deep_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    # Every reply prefills in full (no KV cache kept between them): the tests time and cancel
    # long prefills of the same prompt.
    with running(tmp_path_factory, deep_model_dir, reuse_cache=False, dtype="bfloat16") as started:
        yield started


def _model(harness: Harness) -> Any:
    # Test-only peek at the engine's model; safe while the engine is idle (or held by the test).
    loaded = harness.engine._loaded
    assert loaded is not None
    return loaded.model


def _dtypes(harness: Harness) -> set[str]:
    """Every floating-point parameter's dtype, e.g. {"bfloat16"}."""
    params = _model(harness).parameters()
    return {str(p.dtype).removeprefix("torch.") for p in params if p.is_floating_point()}


def _assert_healthy(harness: Harness, dtype: str) -> ReplyFinished:
    """Alive, entirely in ``dtype``, reported as such, no hook left over, and it still answers."""
    thread = harness.engine._thread
    assert thread is not None and thread.is_alive()
    state = harness.engine.state
    assert state is not None and state.dtype == dtype
    assert _dtypes(harness) == {dtype}
    assert not any(m._forward_pre_hooks for m in _model(harness).modules())
    _, finished = harness.reply(ask("Are you still there?"), GREEDY)
    assert finished.stats.new_tokens >= 1 and finished.stats.dtype == dtype
    return finished


def _fail_on_call(
    monkeypatch: pytest.MonkeyPatch, target: Any, name: str, n: int, exc: BaseException
) -> None:
    """Make ``target.name`` raise a copy of ``exc`` on its ``n``-th call (once), else work."""
    real = getattr(target, name)
    calls = {"n": 0}

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == n:
            # A fresh exception: the parametrised one lives all session, and its traceback
            # would keep the model of this call alive.
            raise type(exc)(*exc.args)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, failing)


def _failed_turn(harness: Harness) -> tuple[ReplyStarted, ReplyFailed]:
    """Ask once while a fault is injected: the turn fails and its stream is closed."""
    request_id = harness.engine.generate(ask("Hello"), GREEDY)
    started = harness.wait_for(ReplyStarted)
    failed = harness.wait_for(ReplyFailed, ReplyFinished)
    assert isinstance(failed, ReplyFailed) and failed.request_id == request_id
    assert started.stream.closed
    return started, failed


# -- 1. an exception inside generation ---------------------------------------------------------
@pytest.mark.parametrize(
    ("where", "exc", "message"),
    [
        ("forward", RuntimeError("injected fault\nsecond line"), "RuntimeError: injected fault"),
        ("logits processor", ValueError("bad logits"), "ValueError: bad logits"),
        # Model code that ends "the program": only the reply may end, never the engine thread.
        ("forward", SystemExit(3), "SystemExit: 3"),
        ("forward", KeyboardInterrupt(), "KeyboardInterrupt"),
    ],
)
def test_an_exception_after_some_tokens_fails_the_turn_and_the_next_prompt_works(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, where: str, exc: Any, message: str
) -> None:
    baseline = harness.reply(ask("Hello"), GREEDY)[1]
    assert baseline.stats.new_tokens > 4
    # The 5th forward (or processor) call: the prefill and 3 decode steps succeed, so 4 tokens
    # have streamed when the fault strikes.
    if where == "forward":
        _fail_on_call(monkeypatch, LlamaForCausalLM, "forward", 5, exc)
    else:
        _fail_on_call(monkeypatch, LogitsProcessorList, "__call__", 5, exc)
    started, failed = _failed_turn(harness)
    assert failed.message == message
    assert started.stream.token_count == 4
    # The partial text is what streamed, and the start of the reply it would have given.
    assert failed.partial_text == started.stream.drain() != ""
    assert baseline.text.startswith(failed.partial_text)
    monkeypatch.undo()
    assert harness.reply(ask("Hello"), GREEDY)[1].text == baseline.text
    _assert_healthy(harness, "bfloat16")


def test_an_exception_before_the_first_token_fails_the_turn(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_on_call(monkeypatch, LlamaForCausalLM, "forward", 1, RuntimeError("at prefill"))
    _started, failed = _failed_turn(harness)
    assert (failed.message, failed.partial_text) == ("RuntimeError: at prefill", "")
    monkeypatch.undo()
    _assert_healthy(harness, "bfloat16")


def test_an_exception_after_generate_returns_fails_the_turn(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Decoding the final text fails: the error escapes `reply` and the engine reports it.
    _fail_on_call(
        monkeypatch, generation, "_decode", 1, UnicodeDecodeError("utf-8", b"", 0, 1, "x")
    )
    _started, failed = _failed_turn(harness)
    assert failed.message.startswith("UnicodeDecodeError")
    monkeypatch.undo()
    _assert_healthy(harness, "bfloat16")


# -- 2. cancel during the prefill of a long prompt ---------------------------------------------
def test_a_cancel_during_prefill_stops_at_the_next_layer(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(harness)
    first, second = model.model.layers[0], model.model.layers[1]
    ran: list[str] = []

    def cancel_in_first_layer(module: Any, args: Any) -> None:
        ran.append("layer 0")
        harness.engine.cancel()  # as if the user pressed Escape right now

    handles = [
        first.register_forward_pre_hook(cancel_in_first_layer),
        second.register_forward_pre_hook(lambda m, a: ran.append("layer 1")),
    ]
    try:
        request_id = harness.engine.generate(ask(MEDIUM_TEXT), GREEDY)
        started = harness.wait_for(ReplyStarted)
        finished = harness.wait_for(ReplyFinished, ReplyFailed)
    finally:
        for handle in handles:
            handle.remove()
    assert isinstance(finished, ReplyFinished) and finished.request_id == request_id
    assert ran == ["layer 0"], "the prefill stops before the next layer runs"
    assert finished.finish == "stopped" and finished.text == ""
    assert finished.stats.new_tokens == 0 and started.stream.closed
    assert finished.stats.ttft_s == 0.0 and finished.stats.total_s > 0
    assert finished.stats.prompt_tokens == started.prompt_tokens > 0
    _assert_healthy(harness, "bfloat16")


def test_cancel_during_a_long_prefill_takes_effect_within_a_layer(
    deep: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    one = GenerationSettings(max_new_tokens=1, temperature=0.0)
    # How long the prefill takes here: the time to the first token of the same prompt.
    ttfts = [deep.reply(ask(LONG_TEXT), one)[1].stats.ttft_s for _ in range(2)]
    deep.engine.generate(ask(LONG_TEXT), GenerationSettings(max_new_tokens=4, temperature=0.0))
    started = deep.wait_for(ReplyStarted)
    assert started.prompt_tokens > 2500
    time.sleep(statistics.median(ttfts) * 0.3)  # well inside the prefill
    cancelled_at = time.perf_counter()
    deep.engine.cancel()
    finished = deep.wait_for(ReplyFinished, ReplyFailed)
    latency = time.perf_counter() - cancelled_at
    assert isinstance(finished, ReplyFinished)
    assert finished.finish == "stopped" and finished.stats.new_tokens == 0
    # No half state: the same long prompt gives the same greedy answer as before the cancel.
    again = deep.reply(ask(LONG_TEXT), one)[1]
    assert again.finish == "length" and again.stats.new_tokens == 1
    ttfts.append(again.stats.ttft_s)
    with capsys.disabled():
        print(
            f"\nprefill of {started.prompt_tokens} tokens: "
            f"{', '.join(f'{t * 1000:.0f}' for t in ttfts)} ms; a cancel 30% into it took "
            f"effect after {latency * 1000:.0f} ms"
        )
    # 8 layers: a cancel waits for about one of them, never for the rest of the prefill (about
    # 0.7 of it here without the layer hooks). The slowest prefill seen bounds a noisy machine.
    assert latency < max(ttfts) * 0.45
    _assert_healthy(deep, "bfloat16")


def test_the_prefill_guard_leaves_decoding_without_hooks(harness: Harness) -> None:
    model = _model(harness)
    seen: list[int] = []
    real_forward = LlamaForCausalLM.forward

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(sum(len(m._forward_pre_hooks) for m in self.modules()))
        return real_forward(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LlamaForCausalLM, "forward", spy)
        harness.reply(ask("Hello"), GREEDY)
    layers = len(model.model.layers)
    # The prefill runs with a hook on the model and each layer; every decode step without any.
    assert seen[0] == layers + 1 and seen[1:] and set(seen[1:]) == {0}


# -- 3. cancel, and more requests, during a precision switch -----------------------------------
@pytest.mark.parametrize(
    ("target", "method"), [("float32", "cast"), ("float16", "cast"), ("float16", "reload")]
)
def test_cancel_and_requests_during_a_switch_leave_one_consistent_dtype(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, target: str, method: str
) -> None:
    inside, release = threading.Event(), threading.Event()
    real_check = loader.check_finite

    def held_check(model: Any, tokenizer: Any, dtype: Any, **kwargs: Any) -> Any:
        inside.set()  # the weights are already in the new dtype; the NaN guard is next
        assert release.wait(30)
        return real_check(model, tokenizer, dtype, **kwargs)

    # A cast runs the NaN guard in switching, a reload inside the load.
    monkeypatch.setattr(switching, "check_finite", held_check)
    monkeypatch.setattr(loader, "check_finite", held_check)
    if method == "reload":  # the path taken after a lossy cast or for an offloaded model
        monkeypatch.setattr(switching, "choose_method", lambda loaded, target: "reload")
    harness.reply(ask("Hello"), GREEDY)  # the prefill guard has seen this model
    old_model = weakref.ref(_model(harness))
    harness.engine.switch_dtype(target)  # type: ignore[arg-type]
    started = harness.wait_for(SwitchStarted)
    assert (started.source, started.target, started.method) == ("bfloat16", target, method)
    assert inside.wait(30)
    # While it switches: what is reported is the last confirmed precision, not a half state.
    assert harness.engine.state is not None and harness.engine.state.dtype == "bfloat16"
    before_cancel = harness.engine.generate(ask("queued before the cancel"), GREEDY)
    harness.engine.cancel()
    after_cancel = harness.engine.generate(ask("queued after the cancel"), GREEDY)
    harness.engine.switch_dtype("bfloat16")  # a second switch, back again
    release.set()

    switched = harness.wait_for(SwitchFinished, SwitchFailed)
    assert isinstance(switched, SwitchFinished) and switched.state.dtype == target
    skipped = harness.wait_for(ReplyFinished, ReplyFailed)
    assert isinstance(skipped, ReplyFinished) and skipped.request_id == before_cancel
    assert skipped.finish == "stopped" and skipped.stats.new_tokens == 0
    answered = harness.wait_for(ReplyFinished, ReplyFailed)
    assert isinstance(answered, ReplyFinished) and answered.request_id == after_cancel
    assert answered.finish != "stopped" and answered.stats.dtype == target
    back = harness.wait_for(SwitchFinished, SwitchFailed)
    assert isinstance(back, SwitchFinished) and back.state.dtype == "bfloat16"
    assert harness.engine.state == back.state
    gc.collect()
    # A cast keeps the model object; a reload frees it, and nothing (no cache) keeps it alive.
    # After a lossy cast (bfloat16 -> float16) the way back is a reload.
    reloaded = method == "reload" or target == "float16"
    assert (old_model() is None) == reloaded
    monkeypatch.undo()
    _assert_healthy(harness, "bfloat16")


@pytest.mark.parametrize("exc", [RuntimeError("out of luck"), KeyboardInterrupt()])
def test_a_cast_that_stops_part_way_is_rolled_back_entirely(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    real_cast = switching.cast_weights
    calls = {"n": 0}

    def half_cast(model: Any, dtype: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 1:  # the roll-back works
            real_cast(model, dtype)
            return
        params = [p for p in model.parameters() if p.is_floating_point()]
        for param in params[: len(params) // 2]:
            param.data = param.data.to(torch.float32)
        raise exc

    monkeypatch.setattr(switching, "cast_weights", half_cast)
    failed = harness.switch("float32")
    assert isinstance(failed, SwitchFailed) and calls["n"] == 2
    assert failed.state is not None and failed.state.dtype == "bfloat16"
    assert harness.engine.state == failed.state
    monkeypatch.undo()
    _assert_healthy(harness, "bfloat16")


def test_a_cast_that_silently_skips_weights_is_refused_and_rolled_back(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_cast = switching.cast_weights
    calls = {"n": 0}

    def skips_the_last_weight(model: Any, dtype: Any) -> None:
        calls["n"] += 1
        last = list(model.parameters())[-1]
        kept = last.data
        real_cast(model, dtype)
        if calls["n"] == 1:
            last.data = kept  # this one was "forgotten"

    monkeypatch.setattr(switching, "cast_weights", skips_the_last_weight)
    failed = harness.switch("float32")
    assert isinstance(failed, SwitchFailed)
    assert "mixed dtypes (bfloat16, float32)" in failed.message
    assert failed.state is not None and failed.state.dtype == "bfloat16"
    monkeypatch.undo()
    _assert_healthy(harness, "bfloat16")


def test_a_switch_asked_for_while_a_reply_streams_waits_for_the_reply(harness: Harness) -> None:
    settings = GenerationSettings(max_new_tokens=120, temperature=0.0)
    request_id = harness.engine.generate(ask("Tell me a long story"), settings)
    started = harness.wait_for(ReplyStarted)
    while started.stream.token_count < 3 and not started.stream.closed:
        time.sleep(0.001)
    harness.engine.switch_dtype("float32")
    finished = harness.wait_for(ReplyFinished, ReplyFailed)
    # The reply is neither cut nor mixed: it ends on its own terms, all of it in bfloat16.
    assert isinstance(finished, ReplyFinished) and finished.request_id == request_id
    assert finished.finish != "stopped" and finished.stats.dtype == "bfloat16"
    switched = harness.wait_for(SwitchFinished, SwitchFailed)
    assert isinstance(switched, SwitchFinished) and switched.state.dtype == "float32"
    _assert_healthy(harness, "float32")
    # A cancel of a streaming reply with a switch queued behind it: the switch still happens.
    harness.engine.generate(ask("Tell me a long story"), settings)
    started = harness.wait_for(ReplyStarted)
    while started.stream.token_count < 3 and not started.stream.closed:
        time.sleep(0.001)
    harness.engine.switch_dtype("bfloat16")
    harness.engine.cancel()
    stopped = harness.wait_for(ReplyFinished, ReplyFailed)
    assert isinstance(stopped, ReplyFinished) and stopped.finish == "stopped"
    back = harness.wait_for(SwitchFinished, SwitchFailed)
    assert isinstance(back, SwitchFinished) and back.state.dtype == "bfloat16"
    _assert_healthy(harness, "bfloat16")
