"""Run the benchmark suite, each script in its own process, then write BENCHMARKS.md and plots.

    python bench/run_all.py [--quick] [--only decode_throughput,switch] [--models demo,tiny-merge]

Scripts run in a fixed order (``report.BENCHMARKS``); ``--quick`` and ``--models`` are passed
through (``--models`` only to scripts that take it). A script that crashes or times out is
recorded and the suite goes on. The run's record goes to ``bench/results/run_all-STAMP.json``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import report
from common import RESULTS, WORKER_ENV

BENCH = Path(__file__).resolve().parent


def command(script: Path, quick: bool, models: str) -> list[str]:
    """The script's command line: ``--models`` only if its source mentions that option."""
    cmd = [sys.executable, str(script)]
    if quick:
        cmd.append("--quick")
    if models and '"--models"' in script.read_text():
        cmd += ["--models", models]
    return cmd


def newest_result(results: Path, name: str, before: set[Path]) -> Path | None:
    """The newest ``NAME-*.json`` in ``results`` that is not in ``before`` (files seen earlier)."""
    fresh = [p for p in results.glob(f"{name}-*.json") if p not in before]
    return max(fresh, key=lambda p: p.stat().st_mtime, default=None)


def run_one(cmd: list[str], timeout: float, tail: collections.deque[str]) -> tuple[int, bool]:
    """Run ``cmd``, echoing its output indented; (exit code, whether it timed out)."""
    env = {**os.environ, **WORKER_ENV, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
        cwd=BENCH.parent,
        start_new_session=True,  # its own process group: a timeout ends its workers too
    )
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        kill_group(proc)

    timer = threading.Timer(timeout, stop)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            print(f"  │ {line.rstrip()}", flush=True)
        return proc.wait(), timed_out.is_set()
    except KeyboardInterrupt:
        kill_group(proc)
        raise
    finally:
        timer.cancel()


def kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_suite(
    names: list[str],
    *,
    quick: bool = False,
    models: str = "",
    timeout: float = 1800,
    scripts: Path = BENCH,
    results: Path = RESULTS,
) -> list[dict[str, Any]]:
    """Run each named script in turn; one record per script (status "ok" or why it failed)."""
    records: list[dict[str, Any]] = []
    t0 = time.time()
    for i, name in enumerate(names, 1):
        script = scripts / f"{name}.py"
        record: dict[str, Any] = {"name": name, "result": None}
        records.append(record)
        if not script.exists():
            record["status"] = "no script"
            print(f"[{i}/{len(names)}] {name}: no script {script.name}, skipped", flush=True)
            continue
        cmd = command(script, quick, models)
        record["command"] = cmd[1:]
        elapsed = time.time() - t0
        shown = " ".join([script.name, *cmd[2:]])
        print(f"[{i}/{len(names)}] {name} (suite at {elapsed / 60:.1f} min): {shown}", flush=True)
        tail: collections.deque[str] = collections.deque(maxlen=25)
        before, start = set(results.glob(f"{name}-*.json")), time.time()
        try:
            rc, timed_out = run_one(cmd, timeout, tail)
        except KeyboardInterrupt:
            record.update(status="interrupted", seconds=round(time.time() - start, 1))
            print(f"[{i}/{len(names)}] {name}: interrupted; writing the report", flush=True)
            break
        found = newest_result(results, name, before)
        record.update(rc=rc, seconds=round(time.time() - start, 1))
        record["result"] = str(found) if found else None
        if timed_out:
            record["status"] = f"timed out after {timeout:.0f} s"
        elif rc != 0:
            record["status"] = f"exit {rc}"
        else:
            record["status"] = "ok" if found else "no result file"
        if record["status"] != "ok":
            record["tail"] = list(tail)
        where = f" → {found.name}" if found else ""
        done = f"{record['status']} in {record['seconds']:.0f} s{where}"
        print(f"[{i}/{len(names)}] {name}: {done}", flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick: smaller, faster runs")
    parser.add_argument("--only", default="", help="comma-separated benchmarks to run")
    parser.add_argument("--models", default="", help="passed on, e.g. demo,tiny-merge")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(report.BENCHMARKS)
    unknown = [n for n in names if n not in report.BENCHMARKS]
    if unknown:
        parser.error(
            f"unknown benchmark {', '.join(unknown)}: one of {', '.join(report.BENCHMARKS)}"
        )
    stamp, started = time.strftime("%Y%m%d-%H%M%S"), time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.time()
    records = run_suite(names, quick=args.quick, models=args.models, timeout=args.timeout)
    RESULTS.mkdir(parents=True, exist_ok=True)
    manifest = RESULTS / f"{report.RUN_PREFIX}{stamp}.json"
    run = {
        "started": started,
        "started_stamp": stamp,
        "seconds": round(time.time() - t0, 1),
        "quick": args.quick,
        "models": args.models,
        "benchmarks": records,
    }
    manifest.write_text(json.dumps(run, indent=1))
    try:
        text = report.generate(run_file=manifest)
    except Exception as exc:  # the runs are recorded: report.py --run can retry after a fix
        print(f"report failed: {exc!r}; retry with: python bench/report.py --run {manifest}")
        return 1
    print("\n" + report.console_view(text) + "\n")
    failed = [f"{r['name']} ({r['status']})" for r in records if r["status"] != "ok"]
    print(f"Suite took {run['seconds'] / 60:.1f} min; wrote {report.OUT.name} and {manifest.name}.")
    if failed:
        print(f"Failed: {', '.join(failed)}; the end of their output is in {manifest}.")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
