"""Real per device x dtype probes (timed decode-shaped kernels) and the cached `detect()`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from mergechat.core import locations
from mergechat.core.capabilities import Capabilities, DeviceInfo, ProbeResult, Verdict
from mergechat.core.devices import CpuMeter, detect_devices
from mergechat.core.dtypes import DTYPES, ITEMSIZE, DType
from mergechat.core.probe_cache import (
    machine_fingerprint,
    probes_from_entry,
    read_entries,
    write_entries,
)
from mergechat.core.probe_kernel import (
    CHECK_CONTEXT,
    CHECK_HIDDEN,
    CHECK_INTERMEDIATE,
    PROBE_CONTEXT,
    PROBE_HIDDEN,
    PROBE_INTERMEDIATE,
    ProbeKernel,
    make_probe_kernel,
)

log = logging.getLogger(__name__)

#: A dtype is ``slow`` when its probe takes at least this many times the fastest dtype's time on
#: the same device, allowing a wider dtype its extra bytes (see `is_slow`). Measured on a 2-core
#: AVX512-BF16 EPYC: float32 runs 2.0-2.7x the float16 time (real decode: 2.25x), which is memory
#: bandwidth, not a defect; float16 without vectorised kernels (ATEN_CPU_CAPABILITY=default) runs
#: 2.7-3.3x the bfloat16 time; emulated bf16/fp16 on CPUs without AVX512-BF16 is 40-500x.
SLOW_FACTOR: Final[float] = 2.5

#: Seconds of timed iterations per dtype, and an iteration cap.
PROBE_BUDGET_S: Final[float] = 0.15
_MAX_ITERS: Final[int] = 60
#: A first (warm-up) run still unfinished after this long stops between stages; its time is
#: extrapolated from the share of work done, so one 500x slow path cannot blow the total.
WARMUP_LIMIT_S: Final[float] = 0.3


def is_slow(dtype: DType, factor: float, fastest: DType) -> bool:
    """The ``slow`` rule: ``factor >= SLOW_FACTOR``, scaled up by the item-size ratio when
    ``dtype`` is wider than the fastest dtype (float32 moves twice the bytes of a half type)."""
    allowance = max(1.0, ITEMSIZE[dtype] / ITEMSIZE[fastest])
    return factor >= SLOW_FACTOR * allowance


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


def _error_text(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def _all_finite(out: Any) -> bool:
    import torch

    return bool(torch.isfinite(out).all().item())


_NOT_FINITE = "the probe produced NaN or inf"


@dataclass
class _Run:
    """Working state of one dtype while its device is probed."""

    dtype: DType
    error: str | None = None
    kernel: ProbeKernel | None = None
    times: list[float] = field(default_factory=list)
    spent: float = 0.0
    #: Set when the warm-up alone used the budget: its seconds, extrapolated if it stopped early.
    extrapolated: float | None = None


def _build(device: DeviceInfo, run: _Run, **shape: int) -> ProbeKernel | None:
    try:
        return make_probe_kernel(device.id, run.dtype, **shape)
    except Exception as exc:  # any backend failure is a verdict, not a crash
        run.error = _error_text(exc)
        return None


def _check(device: DeviceInfo, run: _Run, sync: Callable[[], None]) -> None:
    """Support check on the tiny kernel: an error or a non-finite output means unsupported."""
    kernel = _build(
        device, run, hidden=CHECK_HIDDEN, intermediate=CHECK_INTERMEDIATE, context=CHECK_CONTEXT
    )
    if kernel is None:
        return
    try:
        out = kernel()
        sync()
        if not _all_finite(out):
            run.error = _NOT_FINITE
    except Exception as exc:
        run.error = _error_text(exc)


def _warm_up(device: DeviceInfo, run: _Run, sync: Callable[[], None]) -> None:
    """Build the decode-shaped kernel and run it once, stage by stage, within `WARMUP_LIMIT_S`."""
    kernel = _build(
        device, run, hidden=PROBE_HIDDEN, intermediate=PROBE_INTERMEDIATE, context=PROBE_CONTEXT
    )
    if kernel is None:
        return
    try:
        start, done, state = time.perf_counter(), 0.0, None
        for share, stage in kernel.stages:
            state = stage(state)
            sync()
            done += share
            elapsed = time.perf_counter() - start
            if elapsed > WARMUP_LIMIT_S and done < 1.0:
                run.extrapolated = elapsed / done
                return
        if not _all_finite(state):
            run.error = _NOT_FINITE
            return
        run.spent = time.perf_counter() - start
        if run.spent >= PROBE_BUDGET_S:
            run.extrapolated = run.spent  # so slow that one run is its whole budget
        else:
            run.kernel = kernel
    except Exception as exc:
        run.error = _error_text(exc)


def _time_round_robin(runs: list[_Run], sync: Callable[[], None]) -> None:
    """Time one iteration per dtype in turn (load spikes hit all alike) until budgets run out."""
    active = [r for r in runs if r.kernel is not None]
    while active:
        for run in list(active):
            assert run.kernel is not None
            try:
                start = time.perf_counter()
                run.kernel()
                sync()
                seconds = time.perf_counter() - start
            except Exception as exc:
                run.error, run.kernel = _error_text(exc), None
                active.remove(run)
                continue
            run.times.append(seconds)
            run.spent += seconds
            if run.spent >= PROBE_BUDGET_S or len(run.times) >= _MAX_ITERS:
                active.remove(run)


def _seconds(run: _Run) -> float | None:
    """Best timed iteration; else the warm-up's (complete or extrapolated) time."""
    if run.error is not None:
        return None
    if run.times:
        return min(run.times)
    return run.extrapolated


def probe_device(device: DeviceInfo, dtypes: Iterable[DType] = DTYPES) -> tuple[ProbeResult, ...]:
    """Probe each dtype on ``device`` for real and give it a verdict.

    A tiny kernel first checks that the dtype runs at all and gives finite output (else
    ``unsupported`` with the error text). Each supported dtype then runs the decode-shaped kernel
    once as a warm-up; one still unfinished after `WARMUP_LIMIT_S` stops there and its ``seconds``
    are extrapolated from the share of work done, and one whose warm-up used `PROBE_BUDGET_S`
    keeps that time. The rest are timed in turn, keeping the best iteration within
    `PROBE_BUDGET_S` each. Does not change torch's thread count.
    """
    sync = _synchronizer(device)
    runs = [_Run(dtype) for dtype in dtypes]
    for run in runs:
        _check(device, run, sync)
    for run in runs:
        if run.error is None:
            _warm_up(device, run, sync)
    _time_round_robin(runs, sync)
    for run in runs:
        run.kernel = None  # free the weights before the next device
    _release_memory(device)

    seconds = {r.dtype: s for r in runs if (s := _seconds(r)) is not None}
    fastest = min(seconds, key=seconds.__getitem__, default=None)
    results = []
    for run in runs:
        if run.dtype not in seconds or fastest is None:
            error = run.error or "the probe could not be timed"
            results.append(ProbeResult(device.id, run.dtype, "unsupported", None, error=error))
            continue
        factor = seconds[run.dtype] / seconds[fastest]
        verdict: Verdict = "slow" if is_slow(run.dtype, factor, fastest) else "ok"
        results.append(ProbeResult(device.id, run.dtype, verdict, seconds[run.dtype], factor))
    return tuple(results)


def _release_memory(device: DeviceInfo) -> None:
    """Give cached accelerator memory back so the free-memory reading stays true."""
    if device.kind == "cpu":
        return
    try:
        import torch

        getattr(torch, device.kind).empty_cache()
    except Exception:  # best effort: a failure only leaves memory cached
        pass


#: Other programs using more than this many CPU cores on average during the probe make its
#: timings unreliable (measured: 2-thread bf16 kernels ran 6-800x slower while two other processes
#: were busy on 2 cores); such results are used for this process but not written to disk.
CONTENDED_CORES: Final[float] = 0.25
#: Results measured under contention, kept for this process only: (cache file, fingerprint) ->
_SESSION: dict[tuple[str, str], tuple[tuple[ProbeResult, ...], float]] = {}


def _probe_all(devices: tuple[DeviceInfo, ...]) -> tuple[ProbeResult, ...]:
    """Probe every device; identical accelerators (same kind, name and capability) are probed
    once and share the results, so an 8-GPU machine costs no more than one GPU."""
    done: dict[tuple[str, str, tuple[int, int] | None], tuple[ProbeResult, ...]] = {}
    probes: list[ProbeResult] = []
    for device in devices:
        model = (device.kind, device.name, device.compute_capability)
        if device.kind != "cpu" and model in done:
            probes += [replace(p, device=device.id) for p in done[model]]
            continue
        done[model] = probe_device(device)
        probes += done[model]
    return tuple(probes)


def detect(
    *,
    refresh: bool = False,
    cache_file: Path | None = None,
    devices: tuple[DeviceInfo, ...] | None = None,
) -> Capabilities:
    """Detect devices (live, so free memory is current) and probe every device x dtype.

    Probe results are cached per machine fingerprint and torch version in ``cache_file`` (default
    `locations.probe_cache_file`); ``refresh`` measures again. A probe disturbed by other busy
    programs is used but not cached on disk. Imports torch: call it from the engine thread.
    """
    import torch

    torch_version = str(torch.__version__)
    found = devices if devices is not None else detect_devices()
    path = cache_file if cache_file is not None else locations.probe_cache_file()
    key = machine_fingerprint(found, torch_version)
    if not refresh:
        if (str(path), key) in _SESSION:
            probes, seconds = _SESSION[(str(path), key)]
            return Capabilities(found, probes, torch_version, seconds, from_cache=True)
        entry = read_entries(path).get(key)
        if entry is not None:
            try:
                probes = probes_from_entry(entry, found)
                seconds = float(entry["probe_seconds"])
                return Capabilities(found, probes, torch_version, seconds, from_cache=True)
            except (KeyError, TypeError, ValueError):
                log.info("ignoring a malformed probe cache entry in %s", path)

    meter = CpuMeter()
    probes = _probe_all(found)
    seconds, others = meter.stop()
    # Contended when other programs left fewer free cores than torch's threads need.
    spare = (meter.cores or 1) - torch.get_num_threads()
    if others is not None and others > spare + CONTENDED_CORES:
        log.info("other programs used %.2f cores during the probe; not caching it", others)
        _SESSION[(str(path), key)] = (probes, seconds)
    else:
        entries = read_entries(path)  # re-read: another process may have added its machine
        entries[key] = {
            "torch": torch_version,
            "devices": [f"{d.id}: {d.name}" for d in found],
            "probe_seconds": seconds,
            "probes": [asdict(p) for p in probes],
        }
        write_entries(path, entries)
    return Capabilities(found, probes, torch_version, seconds, from_cache=False)
