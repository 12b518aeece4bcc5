"""Precision switches at runtime: exact casts in memory, lossy ones by reload, fidelity, restore."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_harness import Harness, ask, running
from transformers import AutoTokenizer

from mergechat.core.api import (
    SwitchFailed,
    SwitchFinished,
    SwitchStarted,
)
from mergechat.core.engine import switching
from mergechat.core.errors import MergechatError
from mergechat.core.settings.generation import GenerationSettings


@pytest.fixture(scope="module")
def harness(tiny_merge_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running(tmp_path_factory, tiny_merge_dir, dtype="bfloat16") as started:
        yield started


def _switch(harness: Harness, dtype: Any) -> tuple[SwitchStarted, SwitchFinished]:
    harness.engine.switch_dtype(dtype)
    started = harness.wait_for(SwitchStarted)
    finished = harness.wait_for(SwitchFinished, SwitchFailed)
    assert isinstance(finished, SwitchFinished), finished
    return started, finished


def _weights(harness: Harness) -> dict[str, torch.Tensor]:
    """The parameters as float32 copies (read while the engine is idle)."""
    model = _loaded(harness).model
    return {name: p.detach().float().clone() for name, p in model.named_parameters()}


def _loaded(harness: Harness) -> Any:
    # Test-only peek at the engine's model; safe because the engine is idle between commands.
    return harness.engine._loaded


def test_round_trip_cast_cast_reload_reload(harness: Harness) -> None:
    assert harness.engine.state is not None and harness.engine.state.dtype == "bfloat16"
    before = harness.reply(ask("Hello"), GenerationSettings(max_new_tokens=6))[1].text

    # bf16 -> fp32: exact up-cast in memory: the very same weight values, same predictions.
    bf16_weights = _weights(harness)
    started, up = _switch(harness, "float32")
    assert (started.source, started.target, started.method) == ("bfloat16", "float32", "cast")
    assert up.method == "cast" and up.state.dtype == "float32"
    assert up.state.disk_dtype == "bfloat16" and up.state.reason == "chosen by the user"
    assert up.fidelity is not None
    assert up.fidelity.positions > 20
    # The weights are identical (below), but bf16 and fp32 *compute* differ slightly and a
    # random tiny model has near-tied logits, so a few positions may flip (1-3% measured).
    assert up.fidelity.top1_agreement >= 0.9
    assert _weights(harness).keys() == bf16_weights.keys()
    assert all(torch.equal(v, bf16_weights[k]) for k, v in _weights(harness).items())
    assert (up.fidelity.reference, up.fidelity.target) == ("bfloat16", "float32")
    assert up.fidelity.max_abs_logit_diff < 0.1
    assert str(next(_loaded(harness).model.parameters()).dtype) == "torch.float32"
    assert harness.engine.state == up.state

    # fp32 -> bf16 with bf16 on disk: the fp32 weights still hold the disk values: a cast.
    started, down = _switch(harness, "bfloat16")
    assert started.method == down.method == "cast" and down.state.dtype == "bfloat16"
    assert down.fidelity is not None and down.fidelity.top1_agreement > 0.9
    after = harness.reply(ask("Hello"), GenerationSettings(max_new_tokens=6))[1].text
    assert after == before, "a cast round trip must give back the very same weights"

    # bf16 -> fp16 rounds (and loses range), but a cast of the disk values is bit for bit what
    # from_pretrained(dtype=float16) gives: a cast, and the conversation carries on.
    started, half = _switch(harness, "float16")
    assert started.method == half.method == "cast" and half.state.dtype == "float16"
    from transformers import AutoModelForCausalLM

    fresh = AutoModelForCausalLM.from_pretrained(
        _loaded(harness).info.path, dtype=torch.float16
    ).state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in _weights(harness).items())
    assert half.fidelity is not None and 0.5 < half.fidelity.top1_agreement <= 1.0
    assert half.seconds > 0
    assert harness.reply(ask("Hello"), GenerationSettings(max_new_tokens=4))[1].stats.dtype == (
        "float16"
    )

    # fp16 -> fp32 would be exact from fp16, but the fp16 weights are not the disk values: reload.
    started, back = _switch(harness, "float32")
    assert started.method == back.method == "reload" and back.state.dtype == "float32"
    _switch(harness, "bfloat16")


def test_switch_to_the_same_dtype_is_a_no_op(harness: Harness) -> None:
    dtype = harness.engine.state.dtype if harness.engine.state else "bfloat16"
    _, same = _switch(harness, dtype)
    assert same.seconds == 0.0 and same.fidelity is None and same.state.dtype == dtype


def test_failed_switch_restores_the_previous_precision(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert harness.engine.state is not None and harness.engine.state.dtype == "bfloat16"
    real_check = switching.check_finite

    def nan_in_float16(model: Any, tokenizer: Any, dtype: Any, **kwargs: Any) -> Any:
        if dtype == "float16":
            raise MergechatError("weights produce NaN/inf in float16")
        return real_check(model, tokenizer, dtype, **kwargs)

    monkeypatch.setattr(switching, "check_finite", nan_in_float16)
    for target in ("float16", "float32"):
        if target == "float32":
            # A failing cast is rolled back by the reverse cast.
            monkeypatch.setattr(switching, "read_dtype", _raise)
        harness.engine.switch_dtype(target)
        failed = harness.wait_for(SwitchFailed, SwitchFinished)
        assert isinstance(failed, SwitchFailed), failed
        assert failed.state is not None and failed.state.dtype == "bfloat16"
        assert harness.engine.state == failed.state
        assert str(next(_loaded(harness).model.parameters()).dtype) == "torch.bfloat16"
    assert "NaN/inf in float16" in _failures(harness)[0].message
    _, reply = harness.reply(ask("Still there?"), GenerationSettings(max_new_tokens=4))
    assert reply.stats.dtype == "bfloat16"


def _raise(*_args: Any) -> Any:
    raise RuntimeError("simulated failure after the cast")


def _failures(harness: Harness) -> list[SwitchFailed]:
    return [e for e in harness.events if isinstance(e, SwitchFailed)]


def test_offloaded_or_lossy_models_reload(harness: Harness) -> None:
    loaded = _loaded(harness)
    assert switching.choose_method(loaded, "float32") == "cast"
    assert switching.choose_method(loaded, "float16") == "cast"  # rounds as a load would
    offloaded = dataclasses.replace(loaded, state=dataclasses.replace(loaded.state, offloaded=True))
    assert switching.choose_method(offloaded, "float32") == "reload"
    lossy = dataclasses.replace(loaded, exact=False)
    assert switching.choose_method(lossy, "float32") == "reload"


def test_switch_without_a_model_fails_cleanly(tmp_path_factory: pytest.TempPathFactory) -> None:
    with running(tmp_path_factory) as empty:
        failed = empty.switch("float32")
    assert isinstance(failed, SwitchFailed)
    assert failed.state is None and "no model" in failed.message


def test_a_cast_gives_exactly_what_a_load_in_that_dtype_gives(tiny_merge_dir: Path) -> None:
    from mergechat.core.detect.capabilities import Recommendation
    from mergechat.core.engine.fidelity import probe_logits
    from mergechat.core.engine.loader import load_weights
    from mergechat.core.model.inspection import inspect_model

    info = inspect_model(tiny_merge_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_merge_dir)

    def load(dtype: Any) -> Any:
        rec = Recommendation("cpu", dtype, None, "test")
        return load_weights(info, rec, trust_remote_code=False).model

    for source, target in (("bfloat16", "float32"), ("float32", "bfloat16")):
        cast = load(source)
        switching.cast_weights(cast, target)
        fresh = load(target)
        buffers = dict(cast.named_buffers())
        assert buffers["model.rotary_emb.inv_freq"].dtype == torch.float32
        assert torch.equal(probe_logits(cast, tokenizer), probe_logits(fresh, tokenizer))
