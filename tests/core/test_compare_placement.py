"""`place`: together when the memory fit allows, else one at a time; one precision for all."""

from __future__ import annotations

from fixtures.compare_fakes import GIB, assessment, caps
from mergechat.core.compare.placement import place
from mergechat.core.detect.capabilities import Capabilities, DeviceInfo


def _caps(free_gib: float) -> Capabilities:
    return caps(("cpu", free_gib))


def test_models_that_fit_side_by_side_are_loaded_together() -> None:
    placement = place([assessment(1), assessment(1)], [False, False], _caps(3))
    assert placement.together and not placement.parallel
    assert "fit together" in placement.reason
    assert [m.device for m in placement.models if m] == ["cpu", "cpu"]


def test_models_that_do_not_fit_together_run_one_at_a_time() -> None:
    placement = place([assessment(2), assessment(2)], [False, False], _caps(3))
    assert not placement.together
    assert "one model at a time" in placement.reason


def test_unknown_memory_needs_are_one_at_a_time() -> None:
    placement = place([assessment(1), assessment(1)], [False, False], None)
    assert not placement.together


def test_same_precision_picks_one_every_model_runs() -> None:
    first = assessment(1, "float32", ok=("bfloat16", "float16"))
    second = assessment(1, "bfloat16", ok=("bfloat16",))
    placement = place([first, second], [False, False], _caps(8))
    assert placement.same_dtype == "bfloat16"
    assert [m.dtype for m in placement.models if m] == ["bfloat16", "bfloat16"]
    own = place([first, second], [False, False], _caps(8), same_precision=False)
    assert own.same_dtype is None
    assert [m.dtype for m in own.models if m] == ["float32", "bfloat16"]


def test_without_a_common_precision_each_keeps_its_own() -> None:
    first = assessment(1, "float32", ok=("float32",))
    second = assessment(1, "float16", ok=("float16",))
    placement = place([first, second], [False, False], _caps(8))
    assert placement.same_dtype is None
    assert "own precision" in placement.reason


def test_a_served_model_takes_no_memory_and_failed_ones_are_skipped() -> None:
    placement = place([assessment(2), None, None], [False, True, False], _caps(3))
    assert placement.together
    assert placement.models[1] is not None and placement.models[1].dtype == "auto"
    assert placement.models[2] is None


def test_models_on_their_own_gpus_answer_in_parallel() -> None:
    caps = Capabilities(
        (
            DeviceInfo("cuda:0", "cuda", "gpu0", 8 * GIB, 8 * GIB),
            DeviceInfo("cuda:1", "cuda", "gpu1", 8 * GIB, 8 * GIB),
        ),
        (),
        "test",
        0.0,
    )
    a = assessment(2, device="cuda:0")
    b = assessment(2, device="cuda:1")
    assert place([a, b], [False, False], caps).parallel
