"""Calibration on the loaded model: its own speed beside the prediction, and the one-time note
that another safe precision would make turns clearly faster."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.core.engine_harness import running

from mergechat.core.api import SwitchFinished
from mergechat.core.detect.capabilities import ProbeResult
from mergechat.core.dtypes import DType
from mergechat.core.engine.calibration import FASTER_HINT, compare, first_time


def predicted(dtype: DType, decode: float, prefill: float, *, reliable: bool = True) -> ProbeResult:
    turn = 1000 * prefill + 200 * decode
    return ProbeResult(
        "cpu",
        dtype,
        "ok",
        turn,
        1.0,
        decode_s=decode,
        prefill_s=prefill,
        decode_factor=1.0,
        prefill_factor=1.0,
        reliable=reliable,
    )


# An AVX2-like CPU: bfloat16 decodes a little faster, prefills 7x slower.
PROBES = (
    predicted("float32", 0.08, 0.006),
    predicted("bfloat16", 0.06, 0.040),
    predicted("float16", 0.05, 0.030),
)


def safe(dtype: DType) -> bool:
    return dtype != "float16"


def test_a_clearly_faster_safe_precision_is_found_from_the_measured_speed() -> None:
    # Measured in bfloat16: 0.1 s per decoded token (the probe said 0.06), prefill as predicted.
    speed = compare("bfloat16", (0.040, 0.10), PROBES, safe)
    assert speed.decode_tokens_per_s == pytest.approx(10.0)
    assert speed.predicted_decode_tokens_per_s == pytest.approx(1 / 0.06)
    assert speed.faster_dtype == "float32"
    assert speed.faster_by is not None and speed.faster_by >= FASTER_HINT
    # float16 would be faster still, but it is not safe for this model: never suggested.


def test_no_suggestion_when_the_current_precision_is_already_the_fastest() -> None:
    speed = compare("float32", (0.006, 0.09), PROBES, safe)
    assert speed.faster_dtype is None and speed.faster_by is None


def test_a_disturbed_prediction_suggests_nothing() -> None:
    busy = tuple(
        predicted(p.dtype, p.decode_s or 0, p.prefill_s or 0, reliable=False) for p in PROBES
    )
    assert compare("bfloat16", (0.040, 0.10), busy, safe).faster_dtype is None


def test_the_faster_note_is_said_once_per_model_and_machine(tmp_path: Path) -> None:
    model = tmp_path / "m"
    assert first_time(model, "machine-a", "float32") is True
    assert first_time(model, "machine-a", "float32") is False
    assert first_time(model, "machine-b", "float32") is True
    assert first_time(tmp_path / "other", "machine-a", "float32") is True


def test_the_loaded_model_is_timed_after_a_load_and_a_switch(
    tiny_merge_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running(tmp_path_factory) as harness:
        loaded = harness.load(tiny_merge_dir, device="cpu", dtype="bfloat16")
        speed = loaded.state.speed
        assert speed is not None
        assert speed.decode_tokens_per_s > 0 and speed.prefill_tokens_per_s > 0
        assert speed.predicted_decode_tokens_per_s is not None  # the probe's prediction beside it
        outcome = harness.switch("float32")
        assert isinstance(outcome, SwitchFinished)
        assert outcome.state.dtype == "float32"
        assert outcome.state.speed is not None and outcome.state.speed.decode_tokens_per_s > 0
        assert outcome.state.speed != speed
