"""How busy other programs keep the CPUs while the probe runs (psutil, so it works off Linux too).

A timing taken while other programs compete for the cores says nothing about this model on this
machine: the probe measures again, and a result still disturbed is reported, never trusted.
"""

from __future__ import annotations

import time
from typing import Any, Final

#: Other programs using more than this many cores beyond what torch leaves free disturb a timing.
BUSY_CORES: Final[float] = 0.25


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        return None
    return psutil


class CpuMeter:
    """Wall time since creation and how many cores *other* programs kept busy meanwhile."""

    def __init__(self) -> None:
        self._ps = _psutil()
        self._cpus: list[int] | None = None
        self._process: Any = None
        if self._ps is not None:
            self._process = self._ps.Process()
            try:
                self._cpus = sorted(self._process.cpu_affinity())
            except (AttributeError, OSError, self._ps.Error):
                self._cpus = None
        #: CPUs this process may run on.
        self.cores = len(self._cpus) if self._cpus else (self._ps.cpu_count() if self._ps else 1)
        self._start = self._sample()

    def _sample(self) -> tuple[float, float | None, float | None]:
        """(wall clock, busy seconds of our CPUs, this process's CPU seconds)."""
        wall = time.perf_counter()
        if self._ps is None:
            return wall, None, None
        try:
            per_cpu = self._ps.cpu_times(percpu=True)
            chosen = [per_cpu[i] for i in self._cpus if i < len(per_cpu)] if self._cpus else per_cpu
            busy = sum(_busy(t) for t in chosen)
            own = self._process.cpu_times()
            return wall, busy, own.user + own.system
        except (OSError, self._ps.Error):
            return wall, None, None

    def stop(self) -> tuple[float, float | None]:
        """(wall seconds, average cores used by other programs; None where unknown)."""
        wall, busy, own = self._sample()
        wall0, busy0, own0 = self._start
        seconds = wall - wall0
        if busy is None or busy0 is None or own is None or own0 is None or seconds <= 0:
            return seconds, None
        return seconds, max(0.0, (busy - busy0 - (own - own0)) / seconds)


def _busy(times: Any) -> float:
    """CPU seconds spent on anything but idling or waiting for I/O."""
    idle = getattr(times, "idle", 0.0) + getattr(times, "iowait", 0.0)
    return (
        float(sum(times)) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    )


def disturbed(others: float | None, cores: int, threads: int) -> bool:
    """True when other programs used more cores than torch's ``threads`` leave free."""
    if others is None:
        return False
    return others > max(0, cores - threads) + BUSY_CORES
