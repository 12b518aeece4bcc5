"""The contention meter: other programs' CPU use during a probe is seen, and judged."""

from __future__ import annotations

import subprocess
import sys

from mergechat.core.detect.contention import BUSY_CORES, CpuMeter, disturbed

_SPIN = "import time\nend = time.perf_counter() + 0.8\nwhile time.perf_counter() < end: pass\n"


def test_other_busy_processes_are_counted() -> None:
    meter = CpuMeter()
    spinners = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(2)]
    for spinner in spinners:
        spinner.wait(timeout=30)
    wall, others = meter.stop()
    assert wall >= 0.8
    assert others is not None
    assert others > 0.5  # two spinning processes on this machine's cores, whatever else runs


def test_own_work_is_not_counted_as_others() -> None:
    meter = CpuMeter()
    total = sum(i * i for i in range(3_000_000))
    _, others = meter.stop()
    own = CpuMeter()
    assert total > 0 and own.cores >= 1
    assert others is not None


def test_disturbed_allows_for_the_cores_torch_leaves_free() -> None:
    assert not disturbed(None, 2, 2)
    assert not disturbed(BUSY_CORES / 2, 2, 2)
    assert disturbed(1.0, 2, 2)
    assert not disturbed(1.0, 16, 8)  # eight free cores: another program's one core is fine
    assert disturbed(9.0, 16, 8)
