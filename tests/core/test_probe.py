"""Model-shaped probes per device x dtype (real and with faked kernels), their per-turn verdicts,
contention handling, and the probe cache keyed by machine, torch and model shape."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from mergechat.core.detect import probe, probe_timing
from mergechat.core.detect.capabilities import DeviceInfo, ProbeResult
from mergechat.core.detect.probe import detect, probe_device
from mergechat.core.detect.probe_cache import cache_key, machine_fingerprint
from mergechat.core.detect.probe_kernel import (
    HEAD_CAP_ELEMENTS,
    LAYER_CAP_BYTES,
    WORKING_SET_BYTES,
    Kernels,
    Staged,
    build_master,
    make_kernels,
    plan_for,
)
from mergechat.core.detect.probe_shape import GENERIC, ProbeShape
from mergechat.core.detect.verdicts import speed_text
from mergechat.core.dtypes import DTYPES, DType

HALF_ERROR = "\"addmm_impl_cpu_\" not implemented for 'Half'"
GIB = 1024**3
CPU = DeviceInfo("cpu", "cpu", "Test CPU", 16 * GIB, 8 * GIB, ("avx2", "avx512_bf16"), 2)
SMALL = ProbeShape(64, 160, 4, 2, 16, 512, 4)


def by_dtype(results: tuple[ProbeResult, ...]) -> dict[DType, ProbeResult]:
    return {r.dtype: r for r in results}


class FakeMeter:
    """Stands in for the CPU meter: each round reports the next value of ``others``."""

    others: Iterator[float] = iter(())
    cores = 2

    def stop(self) -> tuple[float, float | None]:
        return 0.01, next(FakeMeter.others, 0.0)


@pytest.fixture
def fast_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe_timing, "SOFT_BUDGET_S", 0.02)
    monkeypatch.setattr(probe_timing, "HARD_BUDGET_S", 0.3)


def fake_kernels(
    monkeypatch: pytest.MonkeyPatch,
    times: dict[DType, tuple[float, float]],
    *,
    fail: dict[DType, Exception] | None = None,
    nan: frozenset[DType] = frozenset(),
    others: tuple[float, ...] = (),
) -> list[tuple[str, DType]]:
    """Replace the kernels: decode and prefill of ``dtype`` sleep ``times[dtype]`` seconds."""
    built: list[tuple[str, DType]] = []
    FakeMeter.others = iter(others)
    monkeypatch.setattr(probe_timing, "CpuMeter", FakeMeter)
    monkeypatch.setattr(probe, "build_master", lambda plan, device: [])
    monkeypatch.setattr(probe_timing, "build_master", lambda plan, device: [])

    def make(plan: Any, master: Any, dtype: DType) -> Kernels:
        built.append(("?", dtype))
        decode, prefill = times.get(dtype, (0.0, 0.0))

        def stage(seconds: float) -> Any:
            def run() -> Any:
                if fail and dtype in fail:
                    raise fail[dtype]
                time.sleep(seconds)
                return torch.full((2,), float("nan") if dtype in nan else 1.0)

            return run

        return Kernels(
            decode=Staged(((1.0, stage(decode)),)),
            prefill=Staged(((0.5, stage(prefill / 2)), (0.5, stage(prefill / 2)))),
            head=Staged(((1.0, stage(0.0)),)),
        )

    monkeypatch.setattr(probe, "make_kernels", make)
    monkeypatch.setattr(probe_timing, "make_kernels", make)
    return built


# --- the real kernels --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_real_kernels_give_finite_output(dtype: DType) -> None:
    plan = plan_for(SMALL)
    kernels = make_kernels(plan, build_master(plan, "cpu"), dtype)
    for piece in (kernels.decode, kernels.prefill, kernels.head):
        out = piece()
        assert torch.isfinite(out.float()).all()
    assert kernels.prefill().shape == (1, plan.prefill_tokens, SMALL.hidden)


def test_real_probe_on_this_cpu_predicts_a_turn_per_dtype() -> None:
    results = by_dtype(probe_device(CPU, SMALL))
    assert set(results) == set(DTYPES)
    timed = [r for r in results.values() if r.verdict != "unsupported"]
    assert timed, "float32 at least must run on any CPU"
    for r in timed:
        assert r.seconds and r.decode_s and r.prefill_s and r.factor
        assert r.seconds == pytest.approx(1000 * r.prefill_s + 200 * r.decode_s)
    assert min(r.factor for r in timed if r.factor) == pytest.approx(1.0, rel=0.3)


def test_the_probe_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    build_master(plan_for(SMALL), "cpu")
    assert torch.equal(torch.rand(3), expected)


def test_plan_holds_a_working_set_and_slices_huge_layers() -> None:
    small = plan_for(SMALL)
    assert small.copies == SMALL.layers  # a tiny model is probed whole
    assert small.layer_share == 1.0
    generic = plan_for(GENERIC)
    assert generic.copies * 4 * generic.layer.layer_params() >= WORKING_SET_BYTES
    huge = ProbeShape(8192, 28672, 64, 8, 128, 128256, 80)  # a 70B layer
    plan = plan_for(huge)
    assert plan.layer_share < 0.25
    assert 4 * plan.layer.layer_params() <= LAYER_CAP_BYTES * 1.05
    assert plan.layer.hidden == huge.hidden  # the residual width stays the model's
    assert plan.head_rows * huge.hidden <= HEAD_CAP_ELEMENTS
    assert 16 <= plan.prefill_tokens <= 512


# --- verdicts, per turn ------------------------------------------------------------------------


def test_a_dtype_fast_at_decode_but_slow_at_prompts_is_judged_per_turn(
    monkeypatch: pytest.MonkeyPatch, fast_budget: None
) -> None:
    # bfloat16 decodes faster than float32 but prefills 100x slower: a turn is slower overall.
    fake_kernels(
        monkeypatch,
        {"float32": (0.004, 0.002), "bfloat16": (0.003, 0.2), "float16": (0.02, 0.02)},
    )
    results = by_dtype(probe_device(CPU, SMALL))
    fp32, bf16 = results["float32"], results["bfloat16"]
    assert fp32.factor == 1.0
    assert bf16.decode_factor is not None and bf16.decode_factor < 1.0
    assert bf16.prefill_factor is not None and bf16.prefill_factor > 4
    assert bf16.factor is not None and bf16.factor > 1.5
    assert speed_text(bf16, "float32").startswith("decode 1.")
    assert "prompts" in speed_text(bf16, "float32") and "slower (vs float32)" in speed_text(
        bf16, "float32"
    )


HALF = (0.001, 0.001)


def test_half_failure_is_unsupported_with_the_error_text(
    monkeypatch: pytest.MonkeyPatch, fast_budget: None
) -> None:
    fake_kernels(monkeypatch, {d: HALF for d in DTYPES}, fail={"float16": RuntimeError(HALF_ERROR)})
    results = by_dtype(probe_device(CPU, SMALL))
    assert results["float16"].verdict == "unsupported"
    assert results["float16"].error == HALF_ERROR
    assert results["float32"].verdict == results["bfloat16"].verdict == "ok"


def test_nan_output_is_unsupported(monkeypatch: pytest.MonkeyPatch, fast_budget: None) -> None:
    fake_kernels(monkeypatch, {}, nan=frozenset({"bfloat16"}))
    results = by_dtype(probe_device(CPU, SMALL))
    assert results["bfloat16"].verdict == "unsupported"
    assert results["bfloat16"].error == "the probe produced NaN or inf"


def test_a_build_that_raises_is_one_line_per_dtype(
    monkeypatch: pytest.MonkeyPatch, fast_budget: None
) -> None:
    fake_kernels(monkeypatch, {})

    def too_big(plan: Any, device: str) -> Any:
        raise RuntimeError("DefaultCPUAllocator: not enough memory\n(more lines)")

    monkeypatch.setattr(probe_timing, "build_master", too_big)
    results = probe_device(CPU, SMALL)
    assert {r.verdict for r in results} == {"unsupported"}
    assert results[0].error == (
        "could not be probed with this model's shapes: DefaultCPUAllocator: not enough memory"
    )


def test_a_pathological_dtype_cannot_blow_the_time_budget(
    monkeypatch: pytest.MonkeyPatch, fast_budget: None
) -> None:
    monkeypatch.setattr(probe_timing, "PIECE_LIMIT_S", 0.05)
    fake_kernels(monkeypatch, {"float32": HALF, "bfloat16": (0.001, 0.2), "float16": HALF})
    start = time.perf_counter()
    results = by_dtype(probe_device(CPU, SMALL))
    assert time.perf_counter() - start < 1.5
    assert results["bfloat16"].verdict == "slow"
    assert results["bfloat16"].factor is not None and results["bfloat16"].factor > 3
    assert results["bfloat16"].prefill_factor is not None
    assert results["bfloat16"].prefill_factor > 50  # extrapolated from the stage it finished


# --- contention ----------------------------------------------------------------------------------


def test_disturbed_rounds_are_measured_again(
    monkeypatch: pytest.MonkeyPatch, fast_budget: None
) -> None:
    fake_kernels(monkeypatch, {d: HALF for d in DTYPES}, others=(3.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    results = probe_device(CPU, SMALL)
    assert all(r.reliable for r in results)


def test_a_machine_busy_throughout_gives_unreliable_ok_verdicts_never_slow(
    monkeypatch: pytest.MonkeyPatch, fast_budget: None, tmp_path: Path
) -> None:
    fake_kernels(
        monkeypatch,
        {"float32": HALF, "bfloat16": (0.001, 0.02), "float16": HALF},
        others=(3.0,) * 100,
    )
    caps = detect(shape=SMALL, cache_file=tmp_path / "p.json", devices=(CPU,))
    assert not caps.reliable
    assert {p.verdict for p in caps.probes} == {"ok"}  # no false "slow"
    assert not (tmp_path / "p.json").exists()  # a disturbed result is never cached on disk


# --- the cache -----------------------------------------------------------------------------------


def test_detect_caches_per_shape_and_rereads_free_memory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fast_budget: None
) -> None:
    built = fake_kernels(monkeypatch, {d: HALF for d in DTYPES})
    cache = tmp_path / "cache" / "probes.json"
    first = detect(shape=SMALL, cache_file=cache, devices=(CPU,))
    assert first.from_cache is False and first.shape == SMALL
    assert json.loads(cache.read_text())["version"] == 2
    count = len(built)

    later = replace(CPU, free_bytes=3 * GIB)
    start = time.perf_counter()
    second = detect(shape=SMALL, cache_file=cache, devices=(later,))
    assert time.perf_counter() - start < 0.05
    assert second.from_cache is True and len(built) == count
    assert second.probes == first.probes and second.shape == SMALL
    assert second.device("cpu") == later  # free memory is live, only probes are cached

    other = detect(shape=replace(SMALL, hidden=128), cache_file=cache, devices=(CPU,))
    assert other.from_cache is False and len(built) > count  # another model shape: measured
    assert len(json.loads(cache.read_text())["entries"]) == 2
    assert detect(shape=SMALL, cache_file=cache, devices=(CPU,), refresh=True).from_cache is False


@pytest.mark.parametrize(
    "content", ["{not json", "", "[]", '{"version": 2, "entries": []}', '{"version": 1}']
)
def test_corrupt_cache_is_ignored_and_rewritten(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fast_budget: None, content: str
) -> None:
    fake_kernels(monkeypatch, {"float32": HALF})
    cache = tmp_path / "probes.json"
    cache.write_text(content)
    assert detect(shape=SMALL, cache_file=cache, devices=(CPU,)).from_cache is False
    data = json.loads(cache.read_text())
    assert list(data["entries"]) == [cache_key((CPU,), torch.__version__, SMALL)]
    assert detect(shape=SMALL, cache_file=cache, devices=(CPU,)).from_cache is True


def test_malformed_entry_is_probed_again_and_others_are_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fast_budget: None
) -> None:
    fake_kernels(monkeypatch, {"float32": HALF})
    cache = tmp_path / "probes.json"
    key = cache_key((CPU,), torch.__version__, SMALL)
    bad = {"probes": [{"device": "cpu", "dtype": "float8", "verdict": "ok"}], "probe_seconds": 1}
    cache.write_text(json.dumps({"version": 2, "entries": {key: bad, "other": {"x": 1}}}))
    caps = detect(shape=SMALL, cache_file=cache, devices=(CPU,))
    assert caps.from_cache is False and len(caps.probes) == 3
    assert set(json.loads(cache.read_text())["entries"]) == {key, "other"}


def test_fingerprint_depends_on_devices_flags_and_torch() -> None:
    base = machine_fingerprint((CPU,), "2.13.0")
    assert base == machine_fingerprint((replace(CPU, free_bytes=1),), "2.13.0")  # memory: no
    assert base != machine_fingerprint((CPU,), "2.12.0")
    assert base != machine_fingerprint((replace(CPU, features=("avx2",)),), "2.13.0")
    gpu = DeviceInfo("cuda:0", "cuda", "NVIDIA A100", 80 * GIB, 70 * GIB, (), None, (8, 0))
    assert base != machine_fingerprint((CPU, gpu), "2.13.0")


# --- accelerators (faked) ------------------------------------------------------------------------


def test_fake_cuda_device_is_probed_per_dtype_and_synchronised(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fast_budget: None
) -> None:
    fake_kernels(monkeypatch, {d: HALF for d in DTYPES})
    synced: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    gpu = DeviceInfo("cuda:0", "cuda", "Fake GPU", 24 * GIB, 20 * GIB, (), None, (8, 6), True)
    caps = detect(shape=SMALL, cache_file=tmp_path / "p.json", devices=(CPU, gpu))
    assert {(p.device, p.dtype) for p in caps.probes} == {
        (d, t) for d in ("cpu", "cuda:0") for t in DTYPES
    }
    assert synced and set(synced) == {"cuda:0"}  # timings wait for the GPU


def test_identical_gpus_are_probed_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fast_budget: None
) -> None:
    probed: list[str] = []
    real = probe.probe_device

    def counting(device: DeviceInfo, *args: Any, **kwargs: Any) -> tuple[ProbeResult, ...]:
        probed.append(device.id)
        return real(device, *args, **kwargs)

    fake_kernels(monkeypatch, {d: HALF for d in DTYPES})
    monkeypatch.setattr(probe, "probe_device", counting)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    twins = [
        DeviceInfo(f"cuda:{i}", "cuda", "NVIDIA H100", 80 * GIB, 79 * GIB, (), None, (9, 0), True)
        for i in range(4)
    ]
    other = DeviceInfo("cuda:4", "cuda", "NVIDIA A10", 24 * GIB, 23 * GIB, (), None, (8, 6), True)
    caps = detect(shape=SMALL, cache_file=tmp_path / "p.json", devices=(CPU, *twins, other))
    assert probed == ["cpu", "cuda:0", "cuda:4"]
    for twin in twins[1:]:
        shared = [caps.probe(twin.id, t) for t in DTYPES]
        first = [caps.probe("cuda:0", t) for t in DTYPES]
        assert [replace(p, device="cuda:0") for p in shared if p] == first
