"""Keypress-to-screen latency while a reply streams: p50/p95 over many keys, end to end.

Method: the app runs in a pseudo-terminal (100x30) in a child process, either with the tests'
scripted engine (``--engine fake``, tokens pushed through a real ReplyStream at ``--rate``
tokens/s) or with the real engine and a model (``--engine real``; ``--model`` or a tiny random
Llama built on the fly). The child regenerates the reply each time it finishes, so text streams
during the whole measurement. The parent sends "go" + Enter, waits for ``generating`` on the
terminal, then types one character at a time (random gaps of 40-120 ms): the clock starts right
before the byte is written to the terminal and stops when the prompt line carrying the whole
typed text has arrived back on the terminal (the typed text uses letters the stream never
produces). Every 40 keys the prompt is cleared (ctrl+u) untimed. The child reports how many
tokens it streamed and how fast.

Usage: python bench/input_latency.py [--engine fake|real] [--rate 500] [--keys 200]
                                     [--model DIR] [--reply-tokens 150] [--idle] [--json FILE]
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
import statistics
import struct
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TYPED = "ZQXJKVWZQXJKVWZQXJKVWZQXJKVWZQXJKVWZQXJKVWZQXJ"
PREFIX = 3  # typed untimed first, so a single letter in the stream cannot end a sample early
PER_LINE = 40
REPLY_TOKENS = 150
#: The fake engine's reply, one token per word: prose, a list and a code block, repeated.
REPLY_TEXT = (
    "Merging **models** with `mergekit`: ties, dare_ties, slerp and linear. The merge keeps "
    "the base model's tokenizer; each task vector is trimmed and signs are elected.\n\n"
    "- density 0.5\n- weight 0.5\n\n```python\nprint(sum(range(10)))\n```\n\n"
)
WORDS = REPLY_TEXT.split(" ")


# -- child: the app ------------------------------------------------------------------------------
def child(engine_kind: str, rate: float, model: str, stats_file: str, reply_tokens: int) -> None:
    sys.path.insert(0, str(REPO / "tests" / "ui"))
    from mergechat.core.api import ReplyFinished, ReplyStarted
    from mergechat.ui.app import MergechatApp
    from mergechat.ui.messages import EngineEventMessage
    from mergechat.ui.options import AppOptions

    tokens: list[int] = []
    last_status: list[str] = []
    clock: list[float] = []

    class Looping(MergechatApp):
        def on_engine_event_message(self, message: EngineEventMessage) -> None:
            super().on_engine_event_message(message)
            last_status[:] = [str(self.chat.status.info), type(message.event).__name__]
            if not clock and isinstance(message.event, ReplyStarted):
                clock.append(time.perf_counter())
            if isinstance(message.event, ReplyFinished) and message.event.finish != "stopped":
                tokens.append(message.event.stats.new_tokens)
                clock[1:] = [time.perf_counter()]
                self.call_later(self.chat.action_regenerate)

    overrides: dict[str, object] = {"max_new_tokens": reply_tokens, "temperature": 0.0}
    if engine_kind == "fake":
        from fake_engine import FakeEngine, Script

        script = Script(reply=[w + " " for w in WORDS] * 200, token_delay=1.0 / rate)
        app = Looping(
            AppOptions(model_path=Path("/bench/fake-model"), generation_overrides=overrides),
            engine_factory=lambda sink: FakeEngine(sink, script),
        )
    else:
        app = Looping(
            AppOptions(model_path=Path(model), device="cpu", generation_overrides=overrides)
        )
    trace = _install_trace(app) if os.environ.get("BENCH_TRACE") else None
    app.run()
    if trace is not None:
        Path(stats_file + ".trace").write_text(json.dumps(trace))
    # Wall time from the first reply's start to the last finished reply (includes the gaps
    # between replies, so it slightly understates the decode speed).
    seconds = clock[-1] - clock[0] if len(clock) == 2 else 0.0
    Path(stats_file).write_text(
        json.dumps(
            {
                "replies": len(tokens),
                "tokens": sum(tokens),
                "wall_seconds": seconds,
                "last_event": last_status,
            }
        )
    )


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
    original_run = WriterThread.run

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
    del original_run
    return trace


# -- parent: the terminal ------------------------------------------------------------------------
class Terminal:
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

    def wait_for(self, text: str, timeout: float) -> float:
        """Seconds until ``text`` arrived (counting output since the last `mark`)."""
        start = time.perf_counter()
        needle = text.encode()
        while needle not in self.buffer:
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"{text!r} not seen in {timeout} s: {self.buffer[-300:]!r}")
            self.pump(0.01)
        return time.perf_counter() - start

    def mark(self) -> None:
        self.buffer = b""

    def send(self, data: str) -> None:
        os.write(self.fd, data.encode())

    def drain(self, seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            self.pump(0.01)


def _tiny_model(root: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from fixtures.tiny_models import build_tiny_llama

    return build_tiny_llama(root / "tiny-llama")


def forced_length_copy(model: Path, root: Path, tokens: int) -> Path:
    """The model's files linked into a new folder whose generation_config.json makes every
    reply exactly ``tokens`` long (a random model would otherwise stop at a random EOS)."""
    folder = root / f"{model.name}-{tokens}"
    folder.mkdir()
    for file in model.iterdir():
        if file.name != "generation_config.json":
            (folder / file.name).symlink_to(file.resolve())
    config = {
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "do_sample": False,
        "max_new_tokens": tokens,
        "min_new_tokens": tokens,
    }
    (folder / "generation_config.json").write_text(json.dumps(config))
    return folder


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    model = args.model or (_tiny_model(root) if args.engine == "real" else Path("unused"))
    if args.engine == "real":
        model = forced_length_copy(model, root, args.reply_tokens)
    stats_file = root / "stats.json"
    env = {
        **os.environ,
        "TERM": "xterm-256color",
        "MERGECHAT_CONFIG_DIR": str(root / "config"),
        "MERGECHAT_DATA_DIR": str(root / "data"),
        "HF_HUB_OFFLINE": "1",
    }
    argv = [
        sys.executable,
        __file__,
        "--child",
        args.engine,
        "--rate",
        str(args.rate),
        "--model",
        str(model),
        "--stats",
        str(stats_file),
        "--reply-tokens",
        str(args.reply_tokens),
    ]
    term = Terminal(argv, env)
    term.wait_for(" ready ", timeout=300)
    if not args.idle:
        term.send("go\r")
        term.mark()
        term.wait_for("generating", timeout=60)
    term.drain(1.0)  # streaming at full speed before the first sample
    rng = random.Random(0)
    samples: list[float] = []
    typed = ""
    while len(samples) < args.keys:
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
    term.send("\x11")  # ctrl+q
    end = time.perf_counter() + 30
    while time.perf_counter() < end:
        term.pump(0.05)
        done, status = os.waitpid(term.pid, os.WNOHANG)
        if done:
            break
    else:
        os.kill(term.pid, signal.SIGKILL)
        raise RuntimeError("the app did not quit")
    if not stats_file.exists():
        error = Path(f"{stats_file}.err")
        raise RuntimeError(error.read_text() if error.exists() else "the app wrote no stats")
    child_stats = json.loads(stats_file.read_text())
    trace_file = Path(f"{stats_file}.trace")
    if trace_file.exists():
        child_stats["trace_ms"] = _trace_summary(json.loads(trace_file.read_text()))
    ms = sorted(s * 1000 for s in samples)
    tok_s = (
        child_stats["tokens"] / child_stats["wall_seconds"]
        if child_stats.get("wall_seconds")
        else None
    )
    return {
        "engine": args.engine,
        "idle": args.idle,
        "model": str(model) if args.engine == "real" else None,
        "requested_rate_tok_s": args.rate if args.engine == "fake" else None,
        "streamed": {**child_stats, "tokens_per_s": tok_s},
        "keys": len(ms),
        "latency_ms": {
            "p50": statistics.median(ms),
            "p95": ms[int(0.95 * (len(ms) - 1))],
            "max": ms[-1],
            "mean": statistics.fmean(ms),
        },
        "exit_code": os.waitstatus_to_exitcode(status),
        "load_average": os.getloadavg(),
    }


def _trace_summary(trace: list[dict[str, float]]) -> dict[str, float]:
    """p50/p95 of each step of the key's way through the app (BENCH_TRACE=1)."""
    out: dict[str, float] = {}
    steps = (("created", "handled"), ("handled", "queued"), ("queued", "written"))
    for start, end in steps:
        values = sorted((t[end] - t[start]) * 1000 for t in trace if start in t and end in t)
        if values:
            out[f"{start}->{end} p50"] = statistics.median(values)
            out[f"{start}->{end} p95"] = values[int(0.95 * (len(values) - 1))]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("fake", "real"), default="fake")
    parser.add_argument("--rate", type=float, default=500.0, help="fake engine tokens/s")
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--idle", action="store_true", help="baseline: no reply streams")
    parser.add_argument(
        "--reply-tokens", type=int, default=REPLY_TOKENS, help="tokens per reply (then regenerate)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stats", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        try:
            child(args.child, args.rate, str(args.model), args.stats, args.reply_tokens)
        except BaseException:
            import traceback

            Path(args.stats + ".err").write_text(traceback.format_exc())
            raise
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args, Path(tmp))
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
