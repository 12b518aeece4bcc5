"""First paint: launch of ``python -m mergechat MODEL`` to its first frame, vs ``import torch``.

Method: the app runs in a pseudo-terminal (100x30, TERM=xterm-256color) with scratch config and
data dirs. The clock starts just before the process is spawned, so interpreter start-up and every
import count. "Screen taken" is when the alternate screen is switched on; the "first frame" is
when the painted status bar (model name and ``loading``) has arrived on the terminal; the
"complete frame" is when the footer's keys (``f2 Settings``) have arrived too: Textual's footer
fills in on a later frame than the rest of the screen. At each, the app's CPU time so far (user +
system, /proc/PID/stat) is read: on a busy machine the wall time grows with the load, the CPU
time much less, so it tells what a quiet machine would see. Then ctrl+q is sent and the exit
code must be 0.

Bytecode caching is on in the launched processes even where PYTHONDONTWRITEBYTECODE is set (as
in some sandboxes): an installed package has its .pyc files, and compiling mergechat's ~40 modules
at every launch would add ~0.1 s that no user pays. The untimed first launch writes them.

Interleaved with each launch, in the same pty setup: ``python -c "import torch"`` (wall time to
exit and its CPU time) and a bare Textual app that paints the same two words (the floor for any
Textual app). One untimed launch of each warms the OS file cache first.

Usage: python bench/first_paint.py [--quick] [--model demo|DIR] [--runs 8]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common

TARGET_S = 0.3
ALT_SCREEN = b"\x1b[?1049h"
STATUS = b"loading"
#: The footer's F2 key and its label (colour codes, and the compact footer's one space, between
#: them); not a toast titled "Settings".
FOOTER = re.compile(rb"f2(?:\x1b\[[0-9;]*m)* ?(?:\x1b\[[0-9;]*m)* ?Settings")
#: A Textual app with a status line and a footer, nothing else: the floor for first paint.
BARE_TEXTUAL = """
from textual.app import App
from textual.widgets import Footer, Static
class Bare(App[None]):
    BINDINGS = [("f2", "noop", "Settings"), ("ctrl+q", "quit", "Quit")]
    def compose(self):
        yield Static("model  loading")
        yield Footer()
Bare().run()
"""
KINDS = ("mergechat", "import torch", "bare textual")


def _read(fd: int, timeout: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:  # the child closed the terminal
        return b""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spawn(argv: list[str], env: dict[str, str]) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:  # the child becomes the program
        os.execve(argv[0], argv, env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    os.kill(pid, signal.SIGWINCH)
    return pid, fd


def _wait_exit(pid: int, fd: int, timeout: float) -> tuple[int, float]:
    """Wait for ``pid`` (draining its terminal); its exit code and CPU seconds (rusage)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        _read(fd, 0.02)
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            os.close(fd)
            return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(fd)
    raise RuntimeError(f"process {pid} did not exit within {timeout} s")


def paint_run(argv: list[str], env: dict[str, str], timeout: float = 60.0) -> dict[str, Any]:
    """Launch an app, wait for its complete first frame, quit with ctrl+q; timings (s from
    launch), CPU seconds at each frame, and the exit code."""
    start = time.perf_counter()
    pid, fd = _spawn(argv, env)
    seen = b""
    marks: dict[str, tuple[float, float]] = {}
    while time.perf_counter() - start < timeout and "complete" not in marks:
        seen += _read(fd, 0.005)
        now = time.perf_counter() - start
        if "screen" not in marks and ALT_SCREEN in seen:
            marks["screen"] = (now, 0.0)
        if "first" not in marks and "screen" in marks and STATUS in seen:
            marks["first"] = (now, _cpu_seconds(pid))
        if "first" in marks and FOOTER.search(seen):
            marks["complete"] = (now, _cpu_seconds(pid))
    if "complete" not in marks:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise RuntimeError(f"no complete frame within {timeout} s; output: {seen[-500:]!r}")
    time.sleep(0.5)  # let the engine thread get going, as it would in real use
    os.write(fd, b"\x11")  # ctrl+q
    code, _ = _wait_exit(pid, fd, 30)
    return {
        "screen_s": marks["screen"][0],
        "wall_s": marks["first"][0],
        "cpu_s": marks["first"][1],
        "complete_wall_s": marks["complete"][0],
        "complete_cpu_s": marks["complete"][1],
        "exit_code": code,
    }


def exit_run(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Launch a program that exits by itself; wall time to exit and its CPU time."""
    start = time.perf_counter()
    pid, fd = _spawn(argv, env)
    code, cpu = _wait_exit(pid, fd, 60)
    return {"wall_s": time.perf_counter() - start, "cpu_s": cpu, "exit_code": code}


def launchers(model: Path, env: dict[str, str]) -> dict[str, Callable[[], dict[str, Any]]]:
    python = sys.executable
    return {
        "mergechat": lambda: paint_run([python, "-m", "mergechat", str(model)], env),
        "import torch": lambda: exit_run([python, "-c", "import torch"], env),
        "bare textual": lambda: paint_run([python, "-c", BARE_TEXTUAL], env),
    }


def summary_rows(label: str, runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """First frame (wall, CPU) against ``import torch``; the complete frame; the Textual floor."""
    keys = ("wall_s", "cpu_s", "complete_wall_s", "complete_cpu_s", "screen_s")
    med = {
        k: {m: common.median(r[m] for r in v) for m in keys if m in v[0]} for k, v in runs.items()
    }
    app, torch, bare = med["mergechat"], med["import torch"], med["bare textual"]
    codes = sorted({r["exit_code"] for r in runs["mergechat"]})
    quit_note = "" if codes == [0] else f"; exit codes {codes} (expected 0)"
    target = f"< {TARGET_S} s"
    return [
        common.row(
            "first paint (wall)",
            app["wall_s"],
            unit="s",
            model=label,
            baseline=torch["wall_s"],
            target=target,
            met=app["wall_s"] < TARGET_S and codes == [0],
            note=f"baseline: python -c 'import torch'; screen taken at {app['screen_s']:.2f} s"
            + quit_note,
        ),
        common.row(
            "first paint (CPU)",
            app["cpu_s"],
            unit="s",
            model=label,
            baseline=torch["cpu_s"],
            target=target,
            met=app["cpu_s"] < TARGET_S,
            note="CPU time at the first frame: about what a quiet machine's wall time is",
        ),
        common.row(
            "complete first screen, footer too (wall)",
            app["complete_wall_s"],
            unit="s",
            model=label,
            baseline=bare["complete_wall_s"],
            note=f"CPU {app['complete_cpu_s']:.2f} s; baseline: a bare Textual app with a footer "
            f"(its first frame {bare['wall_s']:.2f} s, CPU {bare['cpu_s']:.2f} s)",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs of each")
    parser.add_argument("--model", default="demo", help="demo, tiny-merge or a model folder")
    parser.add_argument("--runs", type=int, default=None, help="default 8 (quick 3)")
    args = parser.parse_args()
    reps = args.runs or (3 if args.quick else 8)
    label, model = next(iter(common.resolve_models(args.model).items()))
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            **common.WORKER_ENV,
            "TERM": "xterm-256color",
            "COLORTERM": "",
            "MERGECHAT_CONFIG_DIR": str(Path(tmp) / "config"),
            "MERGECHAT_DATA_DIR": str(Path(tmp) / "data"),
        }
        launch = launchers(model, env)
        for run in launch.values():
            run()  # warm the OS file cache; not counted
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        for rep in range(reps):
            for kind in KINDS if rep % 2 == 0 else KINDS[::-1]:
                time.sleep(0.3)  # let the previous process's threads go away
                runs[kind].append(launch[kind]())
    rows = summary_rows(label, runs)
    plots = {
        "first_paint_s": {
            "series": {
                name: {
                    kind: common.median(r[measure] for r in runs[kind])
                    for kind in KINDS
                    if measure in runs[kind][0]
                }
                for name, measure in (
                    ("first frame, wall", "wall_s"),
                    ("first frame, CPU", "cpu_s"),
                    ("with footer, wall", "complete_wall_s"),
                )
            },
            "title": "launch to first frame (import torch: to exit)",
            "ylabel": "s",
            "kind": "bar",
        }
    }
    payload = {
        "quick": args.quick,
        "model": str(model),
        "bytecode_cache": True,
        "summary": rows,
        "runs": runs,
    }
    path = common.write_result("first_paint", {**payload, "plots": plots})
    print(f"\nlaunch to first frame, median of {reps} interleaved runs (import torch: to exit)")
    print(f"{'':14} {'wall s':>7} {'CPU s':>7} {'min wall':>9} {'+footer wall':>13} {'CPU':>6}")
    for kind in KINDS:
        walls = [r["wall_s"] for r in runs[kind]]
        cpu = common.median(r["cpu_s"] for r in runs[kind])
        line = f"{kind:14} {common.median(walls):7.3f} {cpu:7.3f} {min(walls):9.3f}"
        if kind != "import torch":
            full = common.median(r["complete_wall_s"] for r in runs[kind])
            line += f" {full:13.3f} {common.median(r['complete_cpu_s'] for r in runs[kind]):6.3f}"
        print(line)
    print(f"target < {TARGET_S} s; load average {os.getloadavg()[0]:.2f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
