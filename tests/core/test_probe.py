"""Probes per device x dtype (real and with faked kernels), their verdicts, and the probe cache."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from mergechat.core import probe
from mergechat.core.capabilities import DeviceInfo, ProbeResult
from mergechat.core.devices import CpuMeter
from mergechat.core.dtypes import DTYPES, DType
from mergechat.core.probe import SLOW_FACTOR, WARMUP_LIMIT_S, detect, is_slow, probe_device
from mergechat.core.probe_cache import machine_fingerprint
from mergechat.core.probe_kernel import PROBE_HIDDEN, ProbeKernel, make_probe_kernel

HALF_ERROR = "\"addmm_impl_cpu_\" not implemented for 'Half'"
GIB = 1024**3
CPU = DeviceInfo("cpu", "cpu", "Test CPU", 16 * GIB, 8 * GIB, ("avx2", "avx512_bf16"), 2)


def fake_kernels(
    monkeypatch: pytest.MonkeyPatch,
    seconds: dict[DType, float],
    *,
    fail: dict[DType, Exception] | None = None,
    nan: frozenset[DType] = frozenset(),
) -> list[tuple[str, DType]]:
    """Replace the probe kernel: the decode-shaped one sleeps ``seconds[dtype]`` per run."""
    built: list[tuple[str, DType]] = []

    def make(device: str, dtype: DType, *, hidden: int, intermediate: int, context: int) -> Any:
        built.append((device, dtype))
        delay = seconds.get(dtype, 0.0) / 3 if hidden == PROBE_HIDDEN else 0.0

        def stage(_: Any) -> Any:
            if fail and dtype in fail:
                raise fail[dtype]
            time.sleep(delay)
            return torch.full((2,), float("nan") if dtype in nan else 1.0)

        return ProbeKernel(((1 / 3, stage), (1 / 3, stage), (1 / 3, stage)))

    monkeypatch.setattr(probe, "make_probe_kernel", make)
    return built


def by_dtype(results: tuple[ProbeResult, ...]) -> dict[DType, ProbeResult]:
    return {r.dtype: r for r in results}


# --- the real kernel on this CPU ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_real_kernel_gives_a_finite_decode_step(dtype: DType) -> None:
    kernel = make_probe_kernel("cpu", dtype, hidden=64, intermediate=160, context=16)
    assert sum(share for share, _ in kernel.stages) == pytest.approx(1.0)
    out = kernel()
    assert out.shape == (1, 1, 64)
    assert out.dtype == getattr(torch, dtype)
    assert torch.isfinite(out).all()


def test_real_probe_on_this_cpu() -> None:
    start = time.perf_counter()
    results = probe_device(CPU)
    wall = time.perf_counter() - start
    assert [r.dtype for r in results] == list(DTYPES)
    assert all(r.device == "cpu" for r in results)
    # torch 2.13 runs all three on x86 CPUs; none may be unsupported here.
    assert all(r.verdict in ("ok", "slow") for r in results)
    assert all(r.seconds and r.seconds > 0 and r.factor and r.factor >= 1.0 for r in results)
    assert min(r.factor or 0 for r in results) == 1.0
    # Under 2 s on an idle 2-core machine; the bound leaves room for a CPU shared with others.
    assert wall < 6.0
    assert torch.get_num_threads() >= 1  # untouched (nothing to compare against but sanity)


# --- verdicts from faked kernels -----------------------------------------------------------------


def test_half_failure_is_unsupported_with_the_error_text(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_kernels(
        monkeypatch,
        {"float32": 0.002, "bfloat16": 0.001},
        fail={"float16": RuntimeError(HALF_ERROR + "\n  (traceback detail)")},
    )
    results = by_dtype(probe_device(CPU))
    half = results["float16"]
    assert half.verdict == "unsupported"
    assert half.error == HALF_ERROR  # first line only
    assert half.seconds is None and half.factor is None
    assert results["bfloat16"].verdict == "ok" and results["bfloat16"].factor == 1.0
    assert results["float32"].verdict == "ok"  # 2x a half type is bandwidth, not slow


def test_failure_while_building_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    def make(device: str, dtype: DType, **shape: int) -> Any:
        raise TypeError("BFloat16 is not supported on MPS")

    monkeypatch.setattr(probe, "make_probe_kernel", make)
    results = probe_device(CPU)
    assert {r.verdict for r in results} == {"unsupported"}
    assert results[1].error == "BFloat16 is not supported on MPS"


def test_nan_output_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_kernels(monkeypatch, {"float32": 0.001}, nan=frozenset({"float16"}))
    half = by_dtype(probe_device(CPU))["float16"]
    assert half.verdict == "unsupported"
    assert half.error is not None and "NaN or inf" in half.error


def test_slow_dtype_gets_its_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_kernels(monkeypatch, {"float32": 0.002, "bfloat16": 0.02, "float16": 0.0025})
    results = by_dtype(probe_device(CPU))
    assert results["float32"].verdict == "ok" and results["float32"].factor == 1.0
    assert results["bfloat16"].verdict == "slow"
    assert results["bfloat16"].factor is not None and 6 < results["bfloat16"].factor < 12
    assert results["float16"].verdict == "ok"


def test_pathological_dtype_cannot_blow_the_time_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1.5 s per run (~700x float32): the warm-up stops after its first stage.
    fake_kernels(monkeypatch, {"float32": 0.002, "bfloat16": 0.002, "float16": 1.5})
    start = time.perf_counter()
    results = by_dtype(probe_device(CPU))
    wall = time.perf_counter() - start
    half = results["float16"]
    assert half.verdict == "slow"
    assert half.seconds == pytest.approx(1.5, rel=0.25)  # extrapolated from a third of the work
    assert half.factor is not None and half.factor > 100
    assert wall < 0.5 + WARMUP_LIMIT_S + 2 * probe.PROBE_BUDGET_S


@pytest.mark.parametrize(
    ("dtype", "factor", "fastest", "slow"),
    [
        ("float32", 2.6, "float16", False),  # twice the bytes: allowed 2 * SLOW_FACTOR
        ("float32", 2 * SLOW_FACTOR, "bfloat16", True),
        ("float16", 2.6, "bfloat16", True),
        ("bfloat16", 2.6, "float32", True),
        ("bfloat16", 2.4, "float32", False),
    ],
)
def test_slow_rule(dtype: DType, factor: float, fastest: DType, slow: bool) -> None:
    assert is_slow(dtype, factor, fastest) is slow


# --- detect() and its cache ------------------------------------------------------------------


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend no other program was busy during probes (the test machine is shared)."""
    monkeypatch.setattr(CpuMeter, "stop", lambda self: (0.5, 0.0))


def test_detect_caches_probes_and_rereads_free_memory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet: None
) -> None:
    built = fake_kernels(monkeypatch, {"float32": 0.002, "bfloat16": 0.001, "float16": 0.001})
    cache = tmp_path / "cache" / "probes.json"
    first = detect(cache_file=cache, devices=(CPU,))
    assert first.from_cache is False
    assert cache.is_file()
    assert json.loads(cache.read_text())["version"] == 1
    assert len(built) == 6  # check + decode kernel per dtype

    later = replace(CPU, free_bytes=3 * GIB)
    start = time.perf_counter()
    second = detect(cache_file=cache, devices=(later,))
    elapsed = time.perf_counter() - start
    assert second.from_cache is True
    assert elapsed < 0.05
    assert len(built) == 6  # nothing probed again
    assert second.probes == first.probes
    assert second.probe_seconds == first.probe_seconds
    assert second.device("cpu") == later  # free memory is live, only probes are cached

    third = detect(cache_file=cache, devices=(CPU,), refresh=True)
    assert third.from_cache is False
    assert len(built) == 12


def test_cached_run_of_the_real_detector_is_fast(tmp_path: Path) -> None:
    cache = tmp_path / "probes.json"
    first = detect(cache_file=cache)
    assert first.devices[0].id == "cpu"
    assert {(p.device, p.dtype) for p in first.probes} >= {("cpu", t) for t in DTYPES}
    start = time.perf_counter()
    second = detect(cache_file=cache)
    assert time.perf_counter() - start < 0.05
    assert second.from_cache is True
    assert second.probes == first.probes
    assert second.torch_version == torch.__version__


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "[]",
        '{"version": 1, "entries": []}',
        '{"version": 99, "entries": {}}',
    ],
)
def test_corrupt_cache_is_ignored_and_rewritten(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet: None, content: str
) -> None:
    fake_kernels(monkeypatch, {"float32": 0.001})
    cache = tmp_path / "probes.json"
    cache.write_text(content)
    caps = detect(cache_file=cache, devices=(CPU,))
    assert caps.from_cache is False
    data = json.loads(cache.read_text())
    assert list(data["entries"]) == [machine_fingerprint((CPU,), torch.__version__)]
    assert detect(cache_file=cache, devices=(CPU,)).from_cache is True


def test_malformed_entry_is_probed_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet: None
) -> None:
    fake_kernels(monkeypatch, {"float32": 0.001})
    cache = tmp_path / "probes.json"
    key = machine_fingerprint((CPU,), torch.__version__)
    bad = {"probes": [{"device": "cpu", "dtype": "float8", "verdict": "ok"}], "probe_seconds": 1}
    cache.write_text(json.dumps({"version": 1, "entries": {key: bad, "other-machine": {"x": 1}}}))
    caps = detect(cache_file=cache, devices=(CPU,))
    assert caps.from_cache is False and len(caps.probes) == 3
    entries = json.loads(cache.read_text())["entries"]
    assert set(entries) == {key, "other-machine"}  # other machines' entries are kept


def test_contended_probe_is_not_written_to_disk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(CpuMeter, "stop", lambda self: (0.7, 4.0))  # others used 4 cores
    built = fake_kernels(monkeypatch, {"float32": 0.001})
    cache = tmp_path / "probes.json"
    first = detect(cache_file=cache, devices=(CPU,))
    assert not cache.exists()
    again = detect(cache_file=cache, devices=(CPU,))  # same process: kept in memory
    assert again.from_cache is True and again.probes == first.probes
    assert len(built) == 6


def test_fingerprint_depends_on_devices_flags_and_torch() -> None:
    base = machine_fingerprint((CPU,), "2.13.0")
    assert base == machine_fingerprint((replace(CPU, free_bytes=1),), "2.13.0")  # memory: no
    assert base != machine_fingerprint((CPU,), "2.12.0")
    assert base != machine_fingerprint((replace(CPU, features=("avx2",)),), "2.13.0")
    gpu = DeviceInfo("cuda:0", "cuda", "NVIDIA A100", 80 * GIB, 70 * GIB, (), None, (8, 0))
    assert base != machine_fingerprint((CPU, gpu), "2.13.0")


def test_fake_cuda_device_is_probed_per_dtype(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet: None
) -> None:
    built = fake_kernels(monkeypatch, {"float32": 0.001, "bfloat16": 0.001, "float16": 0.001})
    synced: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    gpu = DeviceInfo("cuda:0", "cuda", "Fake GPU", 24 * GIB, 20 * GIB, (), None, (8, 6), True)
    caps = detect(cache_file=tmp_path / "p.json", devices=(CPU, gpu))
    assert {(p.device, p.dtype) for p in caps.probes} == {
        (d, t) for d in ("cpu", "cuda:0") for t in DTYPES
    }
    assert ("cuda:0", "bfloat16") in built
    assert synced and set(synced) == {"cuda:0"}  # timings wait for the GPU


def test_identical_gpus_are_probed_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet: None
) -> None:
    built = fake_kernels(monkeypatch, {"float32": 0.001, "bfloat16": 0.001, "float16": 0.001})
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    twins = [
        DeviceInfo(f"cuda:{i}", "cuda", "NVIDIA H100", 80 * GIB, 79 * GIB, (), None, (9, 0), True)
        for i in range(4)
    ]
    other = DeviceInfo("cuda:4", "cuda", "NVIDIA A10", 24 * GIB, 23 * GIB, (), None, (8, 6), True)
    caps = detect(cache_file=tmp_path / "p.json", devices=(CPU, *twins, other))
    assert {device for device, _ in built} == {"cpu", "cuda:0", "cuda:4"}
    for twin in twins[1:]:
        shared = [caps.probe(twin.id, t) for t in DTYPES]
        first = [caps.probe("cuda:0", t) for t in DTYPES]
        assert [replace(p, device="cuda:0") for p in shared if p] == first


def test_probe_kernel_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    make_probe_kernel("cpu", "float32", hidden=32, intermediate=64, context=4)()
    assert torch.equal(torch.rand(3), expected)
