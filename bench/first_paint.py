"""First paint: seconds from launching ``python -m mergechat MODEL`` to its first frame.

Method: the command runs in a pseudo-terminal (100x30, TERM=xterm-256color) with fresh config
and cache dirs. The clock starts just before the process is spawned, so interpreter start-up and
every import count. "Screen taken" is when the alternate screen is switched on; "first frame" is
when the painted status bar (its ``loading`` state) and the footer (``Settings``) have both
arrived on the terminal. At that moment the app's CPU time so far (user + system, from
/proc/PID/stat) is read too: on a busy machine the wall time grows with the load, the CPU time
much less, so it tells what a quiet machine would see. Then ctrl+q is sent and the exit code is
checked (must be 0). Runs are repeated and summarised (min / median / max).

Usage: python bench/first_paint.py [--model DIR] [--runs 10] [--json FILE]
       (without --model a tiny random Llama is built into a temp dir first)
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import signal
import statistics
import struct
import sys
import tempfile
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALT_SCREEN = b"\x1b[?1049h"
MARKERS = (b"loading", b"Settings")


def _read(fd: int, timeout: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(model: Path, env: dict[str, str], timeout: float = 30.0) -> dict[str, float | int]:
    """Launch, wait for the first frame, quit with ctrl+q; return the timings and exit code."""
    start = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # child: become the app
        os.execve(sys.executable, [sys.executable, "-m", "mergechat", str(model)], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    os.kill(pid, signal.SIGWINCH)
    seen = b""
    screen_at = frame_at = None
    cpu = 0.0
    while time.perf_counter() - start < timeout and frame_at is None:
        seen += _read(fd, 0.05)
        now = time.perf_counter() - start
        if screen_at is None and ALT_SCREEN in seen:
            screen_at = now
        if screen_at is not None and all(m in seen for m in MARKERS):
            frame_at = now
            cpu = _cpu_seconds(pid)
    if frame_at is None or screen_at is None:
        os.kill(pid, signal.SIGKILL)
        raise RuntimeError(f"no first frame within {timeout} s; output: {seen[-500:]!r}")
    time.sleep(0.5)  # let the engine thread get going, as it would in real use
    os.write(fd, b"\x11")  # ctrl+q
    deadline = time.perf_counter() + 15
    status = None
    while time.perf_counter() < deadline:
        _read(fd, 0.05)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
    else:
        os.kill(pid, signal.SIGKILL)
        raise RuntimeError("the app did not quit on ctrl+q")
    os.close(fd)
    code = os.waitstatus_to_exitcode(status) if status is not None else -1
    return {"screen_s": screen_at, "first_frame_s": frame_at, "cpu_s": cpu, "exit_code": code}


def _tiny_model(root: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from fixtures.tiny_models import build_tiny_llama

    return build_tiny_llama(root / "tiny-llama")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model or _tiny_model(root)
        env = {
            **os.environ,
            "TERM": "xterm-256color",
            "COLORTERM": "",
            "MERGECHAT_CONFIG_DIR": str(root / "config"),
            "MERGECHAT_DATA_DIR": str(root / "data"),
            "HF_HUB_OFFLINE": "1",
        }
        one_run(model, env)  # warm the OS file cache; not counted
        runs = [one_run(model, env) for _ in range(args.runs)]
    frames = [float(r["first_frame_s"]) for r in runs]
    screens = [float(r["screen_s"]) for r in runs]
    cpus = [float(r["cpu_s"]) for r in runs]
    summary = {
        "runs": len(runs),
        "first_frame_s": {
            "min": min(frames),
            "median": statistics.median(frames),
            "max": max(frames),
        },
        "screen_taken_s": {"min": min(screens), "median": statistics.median(screens)},
        "cpu_at_first_frame_s": {"min": min(cpus), "median": statistics.median(cpus)},
        "exit_codes": sorted({int(r["exit_code"]) for r in runs}),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
    return 0 if summary["exit_codes"] == [0] else 1


if __name__ == "__main__":
    raise SystemExit(main())
