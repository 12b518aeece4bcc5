"""The detector's measurements: each device x dtype timed with the model's shapes, cached per
machine, torch version and model shape (`detect`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Final

from mergechat.core.detect.capabilities import Capabilities, DeviceInfo, ProbeResult
from mergechat.core.detect.contention import CpuMeter
from mergechat.core.detect.devices import detect_devices
from mergechat.core.detect.probe_cache import (
    cache_key,
    probes_from_entry,
    read_entries,
    store_entry,
)
from mergechat.core.detect.probe_kernel import build_master, make_kernels, plan_for
from mergechat.core.detect.probe_shape import GENERIC, ProbeShape
from mergechat.core.detect.probe_timing import (
    DtypeRun,
    Progress,
    error_text,
    run_staged,
    time_device,
)
from mergechat.core.dtypes import DTYPES, DType
from mergechat.core.settings import locations

log = logging.getLogger(__name__)

#: The support check before timing: the same structure, tiny, cheap even on an emulated path.
CHECK_SHAPE: Final[ProbeShape] = ProbeShape(64, 128, 2, 1, 32, 256, 1, from_model=False)
#: A result measured while the machine was busy is reused in this process for this long only.
SESSION_TTL_S: Final[float] = 120.0
_SESSION: dict[tuple[str, str], tuple[float, Capabilities]] = {}


def _synchronizer(device: DeviceInfo) -> Callable[[], None]:
    """A function that waits for queued work on ``device`` (a no-op on CPU)."""
    if device.kind == "cpu":
        return lambda: None
    import torch

    if device.kind == "cuda":
        return lambda: torch.cuda.synchronize(device.id)
    if device.kind == "mps":
        return lambda: torch.mps.synchronize()
    return lambda: torch.xpu.synchronize(device.id)


def _check(device: DeviceInfo, run: DtypeRun, sync: Callable[[], None]) -> None:
    """Does ``run.dtype`` run at all on ``device`` and give finite output? (tiny kernels)"""
    import torch

    try:
        plan = plan_for(CHECK_SHAPE)
        kernels = make_kernels(plan, build_master(plan, device.id), run.dtype)
        for piece in (kernels.decode, kernels.prefill, kernels.head):
            _, out = run_staged(piece, sync)
            if out is not None and not bool(torch.isfinite(out).all().item()):
                run.error = "the probe produced NaN or inf"
                return
    except Exception as exc:  # any backend failure is a verdict, not a crash
        run.error = error_text(exc)


def probe_device(
    device: DeviceInfo,
    shape: ProbeShape = GENERIC,
    dtypes: Iterable[DType] = DTYPES,
    progress: Progress | None = None,
) -> tuple[ProbeResult, ...]:
    """Check and time each dtype on ``device`` with ``shape``; never raises for a backend error.

    A failure while building the model-shaped kernels (too large for the free memory) makes
    every dtype that passed the check a one-line ``unsupported`` verdict with the reason.
    """
    import torch

    report: Progress = progress or (lambda _f, _t: None)
    sync = _synchronizer(device)
    runs = [DtypeRun(dtype) for dtype in dtypes]
    report(0.0, f"checking dtypes on {device.id}")
    for run in runs:
        _check(device, run, sync)
    threads = torch.get_num_threads() if device.kind == "cpu" else 1
    try:
        results = time_device(device, shape, runs, sync, threads, report)
    except Exception as exc:
        text = f"could not be probed with this model's shapes: {error_text(exc)}"
        return tuple(
            ProbeResult(device.id, r.dtype, "unsupported", None, error=r.error or text)
            for r in runs
        )
    finally:
        _release_memory(device)
    return results


def _release_memory(device: DeviceInfo) -> None:
    """Give cached accelerator memory back so the free-memory reading stays true."""
    if device.kind == "cpu":
        return
    try:
        import torch

        getattr(torch, device.kind).empty_cache()
    except Exception:  # best effort: a failure only leaves memory cached
        pass


def _probe_all(
    devices: tuple[DeviceInfo, ...], shape: ProbeShape, progress: Progress
) -> tuple[ProbeResult, ...]:
    """Probe every device; identical accelerators (same kind, name and capability) are probed
    once and share the results, so an 8-GPU machine costs no more than one GPU."""
    done: dict[tuple[str, str, tuple[int, int] | None], tuple[ProbeResult, ...]] = {}
    probes: list[ProbeResult] = []
    for i, device in enumerate(devices):
        model = (device.kind, device.name, device.compute_capability)
        if device.kind != "cpu" and model in done:
            probes += [replace(p, device=device.id) for p in done[model]]
            continue

        def report(fraction: float, text: str, i: int = i) -> None:
            progress((i + fraction) / len(devices), text)

        done[model] = probe_device(device, shape, progress=report)
        probes += done[model]
    return tuple(probes)


def detect(
    *,
    shape: ProbeShape | None = None,
    refresh: bool = False,
    cache_file: Path | None = None,
    devices: tuple[DeviceInfo, ...] | None = None,
    progress: Progress | None = None,
) -> Capabilities:
    """Detect devices (live, so free memory is current) and probe every device x dtype with
    ``shape`` (default: a generic decoder layer).

    Results measured on a quiet machine are cached per machine, torch version and shape in
    ``cache_file`` (default `locations.probe_cache_file`); ``refresh`` measures again. Results
    disturbed by other busy programs are never written to disk. Imports torch: call it from the
    engine thread (or a process that does not generate).
    """
    import torch

    torch_version = str(torch.__version__)
    shape = shape or GENERIC
    found = devices if devices is not None else detect_devices()
    path = cache_file if cache_file is not None else locations.probe_cache_file()
    key = cache_key(found, torch_version, shape)
    if not refresh:
        cached = _from_caches(path, key, found)
        if cached is not None:
            return cached

    meter = CpuMeter()
    probes = _probe_all(found, shape, progress or (lambda _f, _t: None))
    seconds, others = meter.stop()
    caps = Capabilities(found, probes, torch_version, seconds, shape=shape, busy_cores=others)
    if caps.reliable:
        entry = {
            "probe_seconds": seconds,
            "shape": asdict(shape),
            "probes": [asdict(p) for p in probes],
        }
        store_entry(path, key, entry, devices=found, torch_version=torch_version)
    else:
        log.info("other programs used %s cores during the probe; not caching it", others)
        _SESSION[(str(path), key)] = (time.monotonic(), caps)
    return caps


def _from_caches(path: Path, key: str, found: tuple[DeviceInfo, ...]) -> Capabilities | None:
    """This process's recent busy-machine result, else the disk cache's entry, else None."""
    session = _SESSION.get((str(path), key))
    if session is not None and time.monotonic() - session[0] < SESSION_TTL_S:
        return replace(session[1], devices=found, from_cache=True)
    entry = read_entries(path).get(key)
    if entry is None:
        return None
    try:
        probes = probes_from_entry(entry, found)
        seconds = float(entry["probe_seconds"])
        shape = ProbeShape(**entry["shape"])
    except (KeyError, TypeError, ValueError):
        log.info("ignoring a malformed probe cache entry in %s", path)
        return None
    torch_version = str(entry["torch"])
    return Capabilities(found, probes, torch_version, seconds, from_cache=True, shape=shape)
