"""Find the compute devices of this machine (CPU, CUDA, MPS, XPU) and validate ``--device``."""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

import psutil

from mergechat.core.detect.capabilities import DeviceInfo
from mergechat.core.errors import DeviceUnavailableError
from mergechat.core.settings.device_choice import DeviceChoice

log = logging.getLogger(__name__)

#: CPU flags that decide how fast low precision runs (x86 /proc/cpuinfo ``flags``, ARM
#: ``Features``); everything else in the flag list is dropped.
RELEVANT_CPU_FLAGS: Final[tuple[str, ...]] = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_fp16",
    "amx_tile",
    "f16c",
    "fma",
    # ARM: native bf16, half-precision arithmetic, scalable vectors.
    "bf16",
    "asimdhp",
    "sve",
)
_BF16_FLAGS: Final[frozenset[str]] = frozenset({"avx512_bf16", "amx_bf16", "bf16"})

#: CPU flags come from here (psutil has none); memory comes from psutil.
_PROC_CPUINFO = Path("/proc/cpuinfo")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_model_and_flags(cpuinfo: str | None) -> tuple[str, tuple[str, ...]]:
    """The CPU model name and its relevant ISA flags, from the text of ``/proc/cpuinfo``."""
    name = ""
    flags: set[str] = set()
    for line in (cpuinfo or "").splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not name:
            name = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if not name:
        name = platform.processor() or platform.machine() or "CPU"
    return name, tuple(f for f in RELEVANT_CPU_FLAGS if f in flags)


def _ram_bytes() -> tuple[int | None, int | None]:
    """Total and available RAM (psutil: Linux, macOS and Windows alike); None when unknown."""
    try:
        memory = psutil.virtual_memory()
    except (OSError, RuntimeError, psutil.Error):
        log.debug("psutil could not read the memory", exc_info=True)
        return None, None
    return int(memory.total), int(memory.available)


def cpu_cores() -> int | None:
    """CPUs this process may run on (honours affinity masks and container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _cpu_device() -> DeviceInfo:
    name, flags = cpu_model_and_flags(_read_text(_PROC_CPUINFO))
    total, free = _ram_bytes()
    # Without flags (non-Linux) native bf16 is unknown rather than absent.
    bf16 = bool(_BF16_FLAGS & set(flags)) if flags else None
    return DeviceInfo("cpu", "cpu", name, total, free, flags, cpu_cores(), bf16_native=bf16)


def _cuda_bf16_native(torch: Any, index: int, capability: tuple[int, int] | None) -> bool | None:
    """Native bf16 on one CUDA/ROCm device, without counting emulation as support."""
    try:
        with torch.cuda.device(index):  # is_bf16_supported asks the *current* device
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:
        pass  # torch < 2.3: no including_emulation; its answer may count emulation
    except Exception:
        log.debug("is_bf16_supported failed on cuda:%d", index, exc_info=True)
    return capability >= (8, 0) if capability is not None else None


def _memory(query: Callable[[int], Any], label: str, index: int) -> tuple[int | None, int | None]:
    """(free, total) bytes from a ``mem_get_info``-style query; (None, None) when it fails."""
    try:
        free, total = query(index)
        return int(free), int(total)
    except Exception:
        log.debug("mem_get_info failed on %s:%d", label, index, exc_info=True)
        return None, None


def _cuda_devices(torch: Any) -> list[DeviceInfo]:
    if not torch.cuda.is_available():
        return []
    notes = ("rocm",) if getattr(torch.version, "hip", None) else ()
    found = []
    for index in range(torch.cuda.device_count()):
        try:
            name = str(torch.cuda.get_device_name(index))
            major, minor = torch.cuda.get_device_capability(index)
        except Exception:  # one broken GPU must not hide the others
            log.warning("cuda:%d could not be queried; skipping it", index, exc_info=True)
            continue
        capability = (int(major), int(minor))
        free, total = _memory(torch.cuda.mem_get_info, "cuda", index)
        bf16 = _cuda_bf16_native(torch, index, capability)
        found.append(
            DeviceInfo(f"cuda:{index}", "cuda", name, total, free, notes, None, capability, bf16)
        )
    return found


def _mps_devices(torch: Any) -> list[DeviceInfo]:
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        return []
    release = platform.mac_ver()[0]
    major = int(release.split(".")[0]) if release.split(".")[0].isdigit() else None
    total: int | None = None
    free: int | None = None
    try:  # unified memory: the share Metal recommends, minus what the driver already holds
        total = int(torch.mps.recommended_max_memory())
        free = total - int(torch.mps.driver_allocated_memory())
    except Exception:
        log.debug("MPS memory query failed", exc_info=True)
    notes = (f"macos {release}",) if release else ()
    bf16 = major >= 14 if major is not None else None
    return [DeviceInfo("mps", "mps", "Apple GPU (MPS)", total, free, notes, bf16_native=bf16)]


def _xpu_devices(torch: Any) -> list[DeviceInfo]:
    xpu = getattr(torch, "xpu", None)
    if xpu is None or not xpu.is_available():
        return []
    found = []
    for index in range(xpu.device_count()):
        free, total = _memory(xpu.mem_get_info, "xpu", index)
        bf16: bool | None = None
        if hasattr(xpu, "is_bf16_supported"):
            try:
                bf16 = bool(xpu.is_bf16_supported())
            except Exception:
                log.debug("is_bf16_supported failed on xpu", exc_info=True)
        name = str(xpu.get_device_name(index))
        found.append(DeviceInfo(f"xpu:{index}", "xpu", name, total, free, bf16_native=bf16))
    return found


def _guarded(label: str, query: Callable[[], list[DeviceInfo]]) -> list[DeviceInfo]:
    """Run one backend's query; a broken backend is logged and skipped, never fatal."""
    try:
        return query()
    except Exception:
        log.warning("%s device detection failed; skipping it", label, exc_info=True)
        return []


def detect_devices() -> tuple[DeviceInfo, ...]:
    """Every usable device, CPU first, with free memory read now. Imports torch."""
    try:
        cpu = _cpu_device()
    except Exception:
        log.warning("CPU detection failed", exc_info=True)
        cpu = DeviceInfo("cpu", "cpu", "CPU", None, None)
    try:
        import torch
    except Exception:
        log.warning("torch could not be imported; only the CPU is listed", exc_info=True)
        return (cpu,)
    accelerators = (
        _guarded("CUDA", lambda: _cuda_devices(torch))
        + _guarded("MPS", lambda: _mps_devices(torch))
        + _guarded("XPU", lambda: _xpu_devices(torch))
    )
    return (cpu, *accelerators)


def parse_device(spec: str, devices: Iterable[DeviceInfo]) -> str:
    """Normalise a ``--device`` value against the devices that exist.

    ``auto`` stays ``auto``; ``cuda`` becomes ``cuda:0`` (likewise ``xpu``). Raises
    `DeviceUnavailableError` naming the devices this machine has when the spec is unknown or the
    device is absent.
    """
    available = [d.id for d in devices]
    have = ", ".join(["auto", *available])
    try:
        wanted = DeviceChoice.parse(spec).device_id
    except ValueError as exc:
        raise DeviceUnavailableError(str(exc), hint=f"choose one of: {have}") from None
    if wanted is None:
        return "auto"
    if wanted not in available:
        raise DeviceUnavailableError(
            f"device {wanted} is not available on this machine", hint=f"available: {have}"
        )
    return wanted


def require_device(device: str) -> None:
    """Raise `DeviceUnavailableError` when an explicitly named accelerator is not on this machine.

    Only device queries, no tensor work (so it may run on the main thread); torch is imported
    only for an accelerator choice.
    """
    choice = DeviceChoice.parse(device)
    kind, index = choice.kind, choice.index or 0
    if not choice.accelerator:
        return
    import torch

    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    elif kind == "xpu":
        xpu = getattr(torch, "xpu", None)
        count = xpu.device_count() if xpu is not None and xpu.is_available() else 0
    else:
        count = 1 if torch.backends.mps.is_available() else 0
    if index < count:
        return
    label = kind.upper()
    found = f"{count} {label} device{'s' if count != 1 else ''}" if count else f"no {label} device"
    raise DeviceUnavailableError(
        f"device {device} is not available: this machine has {found} (torch {torch.__version__})",
        "choose --device auto or cpu; `mergechat doctor` lists the devices",
    )
