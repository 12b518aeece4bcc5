"""Device detection (CPU from /proc, faked CUDA/MPS/XPU queries) and ``--device`` validation."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from mergechat.core.detect import devices
from mergechat.core.detect.capabilities import DeviceInfo
from mergechat.core.detect.devices import (
    cpu_model_and_flags,
    detect_devices,
    parse_device,
)
from mergechat.core.errors import BadInputError, DeviceUnavailableError

GIB = 1024**3

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse sse2 avx f16c fma avx2 avx512f avx512bw avx512_bf16 avx512_vnni sha_ni

processor\t: 1
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse sse2 avx f16c fma avx2 avx512f avx512bw avx512_bf16 avx512_vnni sha_ni
"""

SAPPHIRE_FLAGS = "avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8 f16c fma"

ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp bf16 sve i8mm
CPU implementer\t: 0x41
"""


def test_cpu_model_and_relevant_flags_from_x86_cpuinfo() -> None:
    name, flags = cpu_model_and_flags(X86_CPUINFO)
    assert name == "AMD EPYC 9654 96-Core Processor"
    assert flags == ("avx2", "avx512f", "avx512_bf16", "f16c", "fma")  # sse, sha_ni ... dropped


def test_amx_and_fp16_flags_are_kept() -> None:
    _, flags = cpu_model_and_flags(f"model name : Xeon\nflags : {SAPPHIRE_FLAGS}\n")
    assert set(flags) == {
        "avx2",
        "avx512f",
        "avx512_bf16",
        "avx512_fp16",
        "amx_bf16",
        "amx_tile",
        "f16c",
        "fma",
    }


def test_arm_features_without_model_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "processor", lambda: "aarch64")
    name, flags = cpu_model_and_flags(ARM_CPUINFO)
    assert name == "aarch64"
    assert flags == ("bf16", "asimdhp", "sve")


def test_detect_devices_on_this_machine_lists_the_cpu_first() -> None:
    found = detect_devices()
    cpu = found[0]
    assert cpu.id == "cpu" and cpu.kind == "cpu"
    assert cpu.name
    assert cpu.cores is not None and cpu.cores >= 1
    assert cpu.total_bytes is not None and cpu.free_bytes is not None
    assert 0 < cpu.free_bytes <= cpu.total_bytes
    # Every other device is an accelerator with an index-style id.
    assert all(d.kind != "cpu" for d in found[1:])


class _Memory:
    """What psutil.virtual_memory() returns, as far as device detection reads it."""

    total = 16384000 * 1024
    available = 8192000 * 1024
    free = 100 * 1024


def test_cpu_memory_from_psutil(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(X86_CPUINFO)
    monkeypatch.setattr(devices.psutil, "virtual_memory", _Memory)
    monkeypatch.setattr(devices, "_PROC_CPUINFO", cpuinfo)
    cpu = detect_devices()[0]
    assert cpu.total_bytes == _Memory.total
    assert cpu.free_bytes == _Memory.available  # available, not free
    assert cpu.bf16_native is True
    assert "avx512_bf16" in cpu.features


def test_cpu_without_proc_still_has_memory_and_a_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # macOS and Windows have no /proc: memory still comes from psutil, the name from platform.
    monkeypatch.setattr(devices, "_PROC_CPUINFO", tmp_path / "missing")
    monkeypatch.setattr(platform, "processor", lambda: "arm")
    cpu = detect_devices()[0]
    assert cpu.name == "arm"
    assert cpu.features == ()
    assert cpu.bf16_native is None  # unknown without flags, not "absent"
    assert cpu.total_bytes is not None and cpu.total_bytes > 0
    assert cpu.free_bytes is not None and 0 < cpu.free_bytes <= cpu.total_bytes


def test_memory_psutil_cannot_read_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise OSError("no /proc")

    monkeypatch.setattr(devices.psutil, "virtual_memory", broken)
    cpu = detect_devices()[0]
    assert cpu.total_bytes is None and cpu.free_bytes is None


# --- faked CUDA -------------------------------------------------------------------------------

GPUS = [
    # name, capability, (free, total)
    ("NVIDIA A100-SXM4-80GB", (8, 0), (78 * GIB, 80 * GIB)),
    ("Tesla V100-SXM2-32GB", (7, 0), (30 * GIB, 32 * GIB)),
]


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Fake torch.cuda with the GPUS above; is_bf16_supported answers for the current device."""
    state: dict[str, Any] = {"current": 0, "bf16_calls": []}

    @contextlib.contextmanager
    def device(index: int) -> Iterator[None]:
        saved, state["current"] = state["current"], index
        try:
            yield
        finally:
            state["current"] = saved

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        state["bf16_calls"].append((state["current"], including_emulation))
        major = GPUS[state["current"]][1][0]
        return major >= 8 or including_emulation  # V100 "supports" bf16 only by emulation

    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: len(GPUS))
    monkeypatch.setattr(cuda, "get_device_name", lambda i: GPUS[i][0])
    monkeypatch.setattr(cuda, "get_device_capability", lambda i: GPUS[i][1])
    monkeypatch.setattr(cuda, "mem_get_info", lambda i: GPUS[i][2])
    monkeypatch.setattr(cuda, "device", device)
    monkeypatch.setattr(cuda, "is_bf16_supported", is_bf16_supported)
    return state


def test_cuda_devices_are_listed_with_capability_memory_and_native_bf16(
    fake_cuda: dict[str, Any],
) -> None:
    found = detect_devices()
    assert [d.id for d in found][:3] == ["cpu", "cuda:0", "cuda:1"]
    a100, v100 = found[1], found[2]
    assert (a100.name, a100.kind, a100.compute_capability) == (GPUS[0][0], "cuda", (8, 0))
    assert (a100.free_bytes, a100.total_bytes) == (78 * GIB, 80 * GIB)
    assert a100.bf16_native is True
    assert v100.compute_capability == (7, 0)
    assert v100.bf16_native is False  # emulation does not count
    # Each device was asked while current, and without emulation.
    assert fake_cuda["bf16_calls"] == [(0, False), (1, False)]


def test_old_torch_without_including_emulation_uses_the_capability(
    fake_cuda: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def old_is_bf16_supported() -> bool:  # torch < 2.3 signature, counts emulation
        return True

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", old_is_bf16_supported)
    a100, v100 = detect_devices()[1:3]
    assert a100.bf16_native is True
    assert v100.bf16_native is False


def test_a_failing_memory_query_keeps_the_device(
    fake_cuda: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(index: int) -> tuple[int, int]:
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(torch.cuda, "mem_get_info", broken)
    a100 = detect_devices()[1]
    assert a100.id == "cuda:0"
    assert a100.free_bytes is None and a100.total_bytes is None


def test_a_broken_backend_cannot_crash_detection(
    fake_cuda: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> int:
        raise RuntimeError("CUDA driver initialization failed")

    monkeypatch.setattr(torch.cuda, "device_count", broken)
    monkeypatch.setattr(torch.xpu, "is_available", broken)
    found = detect_devices()
    assert [d.id for d in found] == ["cpu"]


def test_one_broken_gpu_does_not_hide_the_others(
    fake_cuda: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def name(index: int) -> str:
        if index == 0:
            raise RuntimeError("CUDA error: unspecified launch failure")
        return GPUS[index][0]

    monkeypatch.setattr(torch.cuda, "get_device_name", name)
    assert [d.id for d in detect_devices()] == ["cpu", "cuda:1"]


@pytest.mark.parametrize(("release", "bf16"), [("14.2.1", True), ("13.6", False)])
def test_mps_bf16_needs_macos_14(monkeypatch: pytest.MonkeyPatch, release: str, bf16: bool) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(platform, "mac_ver", lambda: (release, ("", "", ""), "arm64"))
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 24 * GIB)
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 4 * GIB)
    mps = detect_devices()[-1]
    assert (mps.id, mps.kind) == ("mps", "mps")
    assert (mps.total_bytes, mps.free_bytes) == (24 * GIB, 20 * GIB)
    assert mps.bf16_native is bf16


def test_xpu_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.xpu, "is_available", lambda: True)
    monkeypatch.setattr(torch.xpu, "device_count", lambda: 1)
    monkeypatch.setattr(torch.xpu, "get_device_name", lambda i: "Intel Arc A770")
    monkeypatch.setattr(torch.xpu, "mem_get_info", lambda i: (15 * GIB, 16 * GIB))
    monkeypatch.setattr(torch.xpu, "is_bf16_supported", lambda: True)
    xpu = detect_devices()[-1]
    assert (xpu.id, xpu.name, xpu.free_bytes, xpu.bf16_native) == (
        "xpu:0",
        "Intel Arc A770",
        15 * GIB,
        True,
    )


# --- --device ---------------------------------------------------------------------------------

CPU = DeviceInfo("cpu", "cpu", "CPU", 16 * GIB, 8 * GIB)
CUDA0 = DeviceInfo("cuda:0", "cuda", "GPU 0", 24 * GIB, 20 * GIB)
CUDA1 = DeviceInfo("cuda:1", "cuda", "GPU 1", 24 * GIB, 20 * GIB)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("auto", "auto"),
        ("AUTO", "auto"),
        ("cpu", "cpu"),
        ("cuda", "cuda:0"),
        ("cuda:1", "cuda:1"),
        (" CUDA:0 ", "cuda:0"),
    ],
)
def test_parse_device_normalises(spec: str, expected: str) -> None:
    assert parse_device(spec, (CPU, CUDA0, CUDA1)) == expected


@pytest.mark.parametrize("spec", ["cuda:3", "mps", "xpu", "cuda"])
def test_parse_device_rejects_devices_this_machine_lacks(spec: str) -> None:
    have = (CPU, CUDA0, CUDA1) if spec != "cuda" else (CPU,)
    with pytest.raises(DeviceUnavailableError) as err:
        parse_device(spec, have)
    assert isinstance(err.value, BadInputError) and err.value.exit_code == 2
    assert "not available" in err.value.message
    assert err.value.hint is not None
    for device in have:
        assert device.id in err.value.hint  # names what exists


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "gpu0", "cpu:1", ""])
def test_parse_device_rejects_unknown_specs(spec: str) -> None:
    with pytest.raises(DeviceUnavailableError, match="unknown device"):
        parse_device(spec, (CPU, CUDA0))
