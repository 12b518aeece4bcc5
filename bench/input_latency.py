"""Keypress-to-screen latency of the app while a reply streams (real engine): p50/p95 of many keys.

Method: the real app (``MergechatApp`` with the real engine and ``--model``) runs in a
pseudo-terminal (100x30) in a child process. For the ``streaming`` mode the parent sends "go" +
Enter, waits for ``generating`` on the terminal and lets the reply stream for a second; the
child regenerates the reply each time it finishes (replies are exactly ``--reply-tokens`` long),
so text streams during the whole measurement. Then the parent types one character at a time
(random gaps of 40-120 ms): the clock starts right before the byte is written to the terminal and
stops when the prompt line carrying the whole typed text has arrived back on the terminal (the
typed text uses letters the stream never produces). Every 40 keys the prompt is cleared (ctrl+u),
untimed. The ``idle`` mode does the same in a fresh app with no reply streaming: the baseline.
The child reports how many tokens it streamed and how fast.

Usage: python bench/input_latency.py [--quick] [--model demo|tiny-merge|DIR] [--keys 150]
                                     [--reply-tokens 150]
       BENCH_TRACE=1 adds where each key's time went inside the app (parsed -> handled ->
       queued for output -> written).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pty
import random
import select
import signal
import struct
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Any

import common

TARGET_P95_MS = 50.0
TYPED = "ZQXJKVWZQXJKVWZQXJKVWZQXJKVWZQXJKVWZQXJKVWZQXJ"
PREFIX = 3  # typed untimed first, so a single letter in the stream cannot end a sample early
PER_LINE = 40
PERCENTILES = (50, 90, 95, 99)
MODES = ("idle", "streaming")


# -- child: the app ------------------------------------------------------------------------------
def child(model: str, stats_file: str, reply_tokens: int) -> None:
    """Run the real app on ``model``; regenerate each finished reply; write stats at exit."""
    from mergechat.core.api import ReplyFinished, ReplyStarted
    from mergechat.core.streaming import ReplyStream
    from mergechat.ui.app import MergechatApp
    from mergechat.ui.messages import EngineEventMessage
    from mergechat.ui.options import AppOptions

    tokens: list[int] = []
    decode: list[float] = []
    started: list[float] = []
    current: list[ReplyStream] = []
    quit_at: list[float] = []

    class Looping(MergechatApp):
        def on_engine_event_message(self, message: EngineEventMessage) -> None:
            super().on_engine_event_message(message)
            event = message.event
            if isinstance(event, ReplyStarted):
                started.append(time.perf_counter())
                current[:] = [event.stream]
            if isinstance(event, ReplyFinished) and event.finish != "stopped":
                tokens.append(event.stats.new_tokens)
                decode.append(event.stats.decode_tokens_per_s)
                current.clear()
                self.call_later(self.chat.action_regenerate)

        async def action_quit(self) -> None:
            quit_at.append(time.perf_counter())
            await super().action_quit()

    overrides: dict[str, object] = {"max_new_tokens": reply_tokens, "temperature": 0.0}
    app = Looping(AppOptions(model_path=Path(model), device="cpu", generation_overrides=overrides))
    trace = _install_trace(app) if os.environ.get("BENCH_TRACE") else None
    app.run()
    ended = quit_at[0] if quit_at else time.perf_counter()
    if trace is not None:
        Path(stats_file + ".trace").write_text(json.dumps(trace))
    # Tokens from the first reply's start to the quit, the reply cut short by it included (the
    # gaps between replies count too, so it slightly understates the decode speed).
    streamed = sum(tokens) + sum(s.token_count for s in current)
    stats = {
        "replies_finished": len(tokens),
        "tokens": streamed,
        "wall_seconds": ended - started[0] if started else 0.0,
        "decode_tps_median": common.median(decode) if decode else None,
    }
    Path(stats_file).write_text(json.dumps(stats))


def _install_trace(app: Any) -> list[dict[str, float]]:
    """Record, per typed key, when it was parsed, handled, queued for output and written."""
    from textual import events
    from textual._time import get_time
    from textual.drivers._writer_thread import WriterThread

    trace: list[dict[str, float]] = []
    original_on_event = type(app).on_event

    async def on_event(self: Any, event: events.Event) -> None:
        if isinstance(event, events.Key) and event.character and event.character.isupper():
            trace.append({"created": event.time, "handled": get_time()})
        await original_on_event(self, event)

    type(app).on_event = on_event
    original_write = WriterThread.write

    def write(self: WriterThread, text: str) -> None:
        prompt = app.chat.prompt.text if trace else ""
        if prompt and prompt in text and "queued" not in trace[-1]:
            trace[-1]["queued"] = get_time()
            text = "\0" + text  # marker for the writer side
        original_write(self, text)

    def run(self: WriterThread) -> None:
        file_write, flush = self._file.write, self._file.flush
        while (text := self._queue.get()) is not None:
            marked = text.startswith("\0")
            file_write(text[1:] if marked else text)
            flush()
            if marked and trace:
                trace[-1]["written"] = get_time()
        flush()

    WriterThread.write = write  # type: ignore[method-assign]
    WriterThread.run = run  # type: ignore[method-assign]
    return trace


def _trace_summary(trace: list[dict[str, float]]) -> dict[str, float]:
    """p50/p95 of each step of the key's way through the app (BENCH_TRACE=1)."""
    out: dict[str, float] = {}
    for start, end in (("created", "handled"), ("handled", "queued"), ("queued", "written")):
        values = [(t[end] - t[start]) * 1000 for t in trace if start in t and end in t]
        if values:
            out[f"{start}->{end} p50"] = common.percentile(values, 50)
            out[f"{start}->{end} p95"] = common.percentile(values, 95)
    return out


# -- parent: the terminal ------------------------------------------------------------------------
class Terminal:
    """A child process in a pseudo-terminal, with what it has written so far."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(sys.executable, argv, env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        os.kill(self.pid, signal.SIGWINCH)
        self.buffer = b""

    def pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            with contextlib.suppress(OSError):  # the app has exited
                self.buffer += os.read(self.fd, 1 << 16)

    def wait_for(self, text: str, timeout: float) -> None:
        """Until ``text`` has arrived (in the output since the last `mark`)."""
        start = time.perf_counter()
        needle = text.encode()
        while needle not in self.buffer:
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"{text!r} not seen in {timeout} s: {self.buffer[-300:]!r}")
            self.pump(0.01)

    def mark(self) -> None:
        self.buffer = b""

    def send(self, data: str) -> None:
        os.write(self.fd, data.encode())

    def drain(self, seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            self.pump(0.01)

    def quit(self) -> int:
        """ctrl+q, then the exit code (the process is killed after 30 s)."""
        self.send("\x11")
        end = time.perf_counter() + 30
        while time.perf_counter() < end:
            self.pump(0.05)
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        raise RuntimeError("the app did not quit")


def type_keys(term: Terminal, keys: int, rng: random.Random) -> list[float]:
    """Type ``keys`` characters; seconds from each write to its echo on the terminal."""
    samples: list[float] = []
    typed = ""
    while len(samples) < keys:
        if len(typed) in (0, PER_LINE):
            term.send("\x15")  # ctrl+u: clear the line, untimed
            typed = TYPED[:PREFIX]
            term.drain(0.1)
            term.mark()
            term.send(typed)
            term.wait_for(typed, timeout=10)
        term.drain(rng.uniform(0.04, 0.12))
        typed += TYPED[len(typed)]
        term.mark()
        start = time.perf_counter()
        term.send(typed[-1])
        term.wait_for(typed, timeout=10)
        samples.append(time.perf_counter() - start)
    return samples


def measure(mode: str, model: Path, keys: int, reply_tokens: int, root: Path) -> dict[str, Any]:
    """One app process: type ``keys`` keys while idle or while replies stream."""
    stats_file = root / f"stats-{mode}.json"
    env = {
        **os.environ,
        **common.WORKER_ENV,
        "TERM": "xterm-256color",
        "MERGECHAT_CONFIG_DIR": str(root / f"config-{mode}"),
        "MERGECHAT_DATA_DIR": str(root / f"data-{mode}"),
    }
    argv = [sys.executable, __file__, "--child", str(model), "--stats", str(stats_file)]
    term = Terminal([*argv, "--reply-tokens", str(reply_tokens)], env)
    term.wait_for(" ready ", timeout=300)
    if mode == "streaming":
        term.send("go\r")
        term.mark()
        term.wait_for("generating", timeout=60)
    term.drain(1.0)  # streaming at full speed (or settled) before the first sample
    samples = type_keys(term, keys, random.Random(0))
    exit_code = term.quit()
    if not stats_file.exists():
        error = Path(f"{stats_file}.err")
        raise RuntimeError(error.read_text() if error.exists() else "the app wrote no stats")
    streamed: dict[str, Any] = json.loads(stats_file.read_text())
    if streamed["wall_seconds"]:
        streamed["tokens_per_s"] = streamed["tokens"] / streamed["wall_seconds"]
    trace_file = Path(f"{stats_file}.trace")
    if trace_file.exists():
        streamed["trace_ms"] = _trace_summary(json.loads(trace_file.read_text()))
    ms = [s * 1000 for s in samples]
    return {
        "mode": mode,
        "keys": len(ms),
        "latency_ms": {f"p{q}": common.percentile(ms, q) for q in PERCENTILES}
        | {"max": max(ms), "mean": sum(ms) / len(ms)},
        "samples_ms": ms,
        "streamed": streamed,
        "exit_code": exit_code,
    }


def summary_rows(label: str, results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    idle, busy = results["idle"]["latency_ms"], results["streaming"]["latency_ms"]
    streamed = results["streaming"]["streamed"]
    rate = streamed.get("tokens_per_s")
    during = f"{streamed['tokens']} tokens streamed at {rate:.1f} tok/s" if rate else "no reply"
    rows = [
        common.row(
            "keypress to screen p50",
            busy["p50"],
            unit="ms",
            model=label,
            mode="streaming",
            baseline=idle["p50"],
            note=f"baseline: the same app idle; {during}",
        ),
        common.row(
            "keypress to screen p95",
            busy["p95"],
            unit="ms",
            model=label,
            mode="streaming",
            baseline=idle["p95"],
            target=f"< {TARGET_P95_MS:g} ms",
            met=busy["p95"] < TARGET_P95_MS,
            note=f"baseline: the same app idle; {during}",
        ),
        common.row(
            "keypress to screen p95",
            idle["p95"],
            unit="ms",
            model=label,
            mode="idle",
            target=f"< {TARGET_P95_MS:g} ms",
            met=idle["p95"] < TARGET_P95_MS,
        ),
    ]
    codes = {r["exit_code"] for r in results.values()}
    if codes != {0}:
        rows[1]["note"] += f"; app exit codes {sorted(codes)} (expected 0)"
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny-merge, 40 keys per mode")
    parser.add_argument("--model", default=None, help="demo (default), tiny-merge or a folder")
    parser.add_argument("--keys", type=int, default=None, help="keys per mode (default 150)")
    parser.add_argument("--reply-tokens", type=int, default=150, help="tokens per reply")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stats", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        try:
            child(args.child, args.stats, args.reply_tokens)
        except BaseException:
            import traceback

            Path(args.stats + ".err").write_text(traceback.format_exc())
            raise
        return 0
    keys = args.keys or (40 if args.quick else 150)
    name = args.model or ("tiny-merge" if args.quick else "demo")
    label, model = next(iter(common.resolve_models(name).items()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        forced = common.forced_length_copy(model, root / "models", args.reply_tokens)
        results = {mode: measure(mode, forced, keys, args.reply_tokens, root) for mode in MODES}
    rows = summary_rows(label, results)
    plots = {
        "latency_ms": {
            "series": {
                mode: {q: v for q, v in r["latency_ms"].items() if q.startswith("p")}
                for mode, r in results.items()
            },
            "title": "keypress to screen, percentiles",
            "ylabel": "ms",
            "kind": "bar",
        }
    }
    payload = {"quick": args.quick, "model": str(model), "keys": keys, "summary": rows}
    path = common.write_result("input_latency", {**payload, "runs": results, "plots": plots})
    print(f"\nkeypress to screen, {keys} keys per mode ({label})")
    print(f"{'mode':10} " + " ".join(f"{f'p{q} ms':>8}" for q in PERCENTILES) + "  streamed")
    for mode, r in results.items():
        lat, streamed = r["latency_ms"], r["streamed"]
        rate = streamed.get("tokens_per_s")
        what = f"{streamed['tokens']} tokens, {rate:.1f} tok/s" if rate else "-"
        print(f"{mode:10} " + " ".join(f"{lat[f'p{q}']:8.1f}" for q in PERCENTILES) + f"  {what}")
    print(f"target p95 < {TARGET_P95_MS:g} ms; load average {os.getloadavg()[0]:.2f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
