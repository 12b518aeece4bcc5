"""SIGHUP/SIGTERM mid-reply to a real `mergechat` process: the prompt and the partial reply stay.

A dropped SSH session sends SIGHUP (and takes the terminal away); `kill` sends SIGTERM. Each test
runs `python -m mergechat` (the app in a pseudo-terminal, or one-shot) on the tiny model with a
long greedy reply, checks the exit and the terminal, and opens the history store afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mergechat.core.store.records import Conversation
from mergechat.core.store.store import HistoryStore
from mergechat.core.termination import RESET_SEQUENCE

# Greedy decoding of the random tiny model does not stop early on this prompt (checked: 400
# tokens), so the reply is still streaming when the signal arrives.
PROMPT = "Tell me a long story"
# Long enough that the reply is still streaming when the signal comes, even on a fast machine.
FLAGS = ["--max-new-tokens", "6000", "--temperature", "0", "--dtype", "float32"]
SIGNALS = [signal.SIGHUP, signal.SIGTERM]
SIGNAL_IDS = ["SIGHUP", "SIGTERM"]
#: What Textual writes when it gives the terminal back: alternate screen off, cursor shown,
#: mouse reporting and bracketed paste off.
RESTORE_SEQUENCES = [b"\x1b[?1049l", b"\x1b[?25h", b"\x1b[?1000l", b"\x1b[?2004l"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with an 8k context, so a 6000-token reply fits."""
    from fixtures.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("long") / "tiny-llama-8k", context=8192)


def _env(data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "MERGECHAT_DATA_DIR": str(data_dir),
        "TERM": "xterm-256color",
    }


def _conversations(data_dir: Path) -> list[Conversation]:
    if not (data_dir / "history.sqlite3").exists():
        return []
    with HistoryStore.open(data_dir / "history.sqlite3") as store:
        return [store.get_conversation(s.id) for s in store.list_conversations()]


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_oneshot_saves_prompt_and_partial_reply_on_sigterm(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # SIGHUP: test_oneshot_in_a_terminal_that_hangs_up_saves_the_reply_and_exits.
    signum = signal.SIGTERM
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "mergechat", str(tiny_model_dir), "--prompt", PROMPT, *FLAGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(data))
    assert proc.stdout is not None
    first = proc.stdout.read1(4096)  # type: ignore[attr-defined]
    assert first, "no reply text before the process ended"
    proc.send_signal(signum)
    rest, err = proc.communicate(timeout=60)
    out = (first + rest).decode("utf-8", "replace")
    assert proc.returncode == 128 + signum, err
    assert b"Traceback" not in err
    [conv] = _conversations(data)
    user, reply = conv.messages
    assert (user.role, user.text, user.state) == ("user", PROMPT, "complete")
    assert (reply.role, reply.state) == ("assistant", "stopped")
    # Saved exactly as far as it had reached stdout; the line is ended for the shell prompt.
    assert reply.text and out in (reply.text, reply.text + "\n") and out.endswith("\n")


class _Terminal:
    """`mergechat` run in a pseudo-terminal, as over SSH; its output is read continuously."""

    def __init__(
        self, args: list[str], env: dict[str, str], stderr_file: Path | None = None
    ) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: a session leader whose controlling terminal is the pty
            try:
                if stderr_file is not None:
                    # Still a child of the pty, but its errors stay readable after a hang-up.
                    os.dup2(os.open(stderr_file, os.O_WRONLY | os.O_CREAT, 0o600), 2)
                os.execve(sys.executable, [sys.executable, "-m", "mergechat", *args], env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.status: int | None = None

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the child closed the terminal, or we did
                return
            if not chunk:
                return
            self.output += chunk

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def cooked(self) -> bool:
        """True when the terminal is in its normal line mode (echo and line editing on)."""
        lflag = termios.tcgetattr(self.fd)[3]
        return bool(lflag & termios.ECHO) and bool(lflag & termios.ICANON)

    def wait(self, timeout: float) -> int:
        """The exit status (128 + N when killed by signal N); fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status if self.status >= 0 else 128 - self.status
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"mergechat did not exit within {timeout} s")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _send_when_ready(term: _Terminal, data: Path) -> None:
    """Type the prompt, press Enter until the app (done loading) takes it and saves it."""
    # Typed before the app owns the terminal, the text would be flushed when it takes it.
    _wait(lambda: b"Enter sends" in term.output, timeout=60, what="the app's first frame")
    term.type(PROMPT)

    def saved() -> bool:
        if any(m.role == "user" for c in _conversations(data) for m in c.messages):
            return True
        term.type("\r")  # refused while loading: the text stays in the input
        time.sleep(0.25)
        return False

    _wait(saved, timeout=60, what="the prompt to be saved")


@pytest.mark.parametrize("signum", SIGNALS, ids=SIGNAL_IDS)
def test_app_in_a_terminal_saves_the_reply_and_restores_the_terminal_on_signal(
    tiny_model_dir: Path, tmp_path: Path, signum: int
) -> None:
    data = tmp_path / "data"
    term = _Terminal([str(tiny_model_dir), *FLAGS], _env(data))
    try:
        assert term.cooked()
        _send_when_ready(term, data)
        assert not term.cooked()  # the app has the terminal in raw mode

        # The streaming reply is saved about once a second: wait for its first save.
        def reply_text() -> str:
            messages = _conversations(data)[0].messages
            return messages[1].text if len(messages) == 2 else ""

        _wait(reply_text, 10, "the reply's first save")
        streamed = reply_text()
        os.kill(term.pid, signum)
        assert term.wait(timeout=30) == 0
        assert term.cooked(), "the terminal is given back in line mode"
    finally:
        term.close()
    [conv] = _conversations(data)
    user, reply = conv.messages
    assert (user.role, user.text) == ("user", PROMPT)
    assert (reply.role, reply.state) == ("assistant", "stopped")
    assert reply.text.startswith(streamed)  # and what streamed after that save, up to the signal
    # The terminal was given back: alternate screen left, cursor shown, mouse and paste off.
    tail = term.output[term.output.rfind(b"\x1b[?1049h") :]
    assert all(sequence in tail for sequence in RESTORE_SEQUENCES), tail[-300:]
    assert b"Traceback" not in term.output


def test_app_exits_when_the_terminal_hangs_up(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    # Textual draws on stderr, so it stays on the terminal here (no stderr_file).
    term = _Terminal([str(tiny_model_dir), *FLAGS], _env(data))
    try:
        _send_when_ready(term, data)
        # Mid-reply: the reply's row exists (it is added once its widgets are on screen).
        _wait(lambda: len(_conversations(data)[0].messages) == 2, 30, "the reply's row")
    finally:
        term.close()  # as sshd does when the connection drops: the kernel sends SIGHUP
    term.wait(timeout=30)
    [conv] = _conversations(data)
    user, reply = conv.messages
    assert (user.role, user.text) == ("user", PROMPT)
    assert reply.role == "assistant" and reply.state in ("stopped", "complete")


def test_oneshot_in_a_terminal_that_hangs_up_saves_the_reply_and_exits(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data, errors = tmp_path / "data", tmp_path / "stderr.txt"
    args = [str(tiny_model_dir), "--prompt", PROMPT, *FLAGS]
    term = _Terminal(args, _env(data), stderr_file=errors)
    try:
        _wait(lambda: len(term.output) > 40, 60, "the reply to stream")
    finally:
        term.close()  # the SSH connection drops: SIGHUP, and stdout is gone (EIO)
    assert term.wait(timeout=30) == 128 + signal.SIGHUP
    assert "Traceback" not in errors.read_text()
    [conv] = _conversations(data)
    user, reply = conv.messages
    assert (user.role, user.text, user.state) == ("user", PROMPT, "complete")
    assert (reply.role, reply.state) == ("assistant", "stopped") and reply.text


_RAW_CHILD = """
import os, sys, termios, threading, time
from mergechat.core.termination import exit_watchdog
attrs = termios.tcgetattr(0)  # as Textual's raw mode: no echo, no line editing, no ^C, no ICRNL
attrs[0] &= ~(termios.ICRNL | termios.IXON)
attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
termios.tcsetattr(0, termios.TCSANOW, attrs)
os.write(2, b"\\x1b[?1049h\\x1b[?25l")
if sys.argv[1] == "stuck":  # the terminal stopped reading: output blocks
    threading.Thread(target=lambda: [os.write(2, b"x" * 4096) for _ in iter(int, 1)]).start()
exit_watchdog(0.3, 0)
time.sleep(60)
"""


@pytest.mark.parametrize("terminal", ["reading", "stuck"])
def test_the_exit_watchdog_gives_the_terminal_back_and_never_blocks(terminal: str) -> None:
    # The watchdog ends an app whose clean exit after SIGHUP/SIGTERM hangs; it must leave the
    # terminal usable, even when the terminal no longer reads what is written to it.
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execv(sys.executable, [sys.executable, "-c", _RAW_CHILD, terminal])
        finally:
            os._exit(127)
    output = bytearray()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if terminal == "reading":
                with contextlib.suppress(OSError):
                    output += os.read(fd, 65536)
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError("the watchdog did not end the process")
        assert os.waitstatus_to_exitcode(status) == 0
        lflag = termios.tcgetattr(fd)[3]
        assert lflag & termios.ECHO and lflag & termios.ICANON and lflag & termios.ISIG
        if terminal == "reading":
            with contextlib.suppress(OSError):
                output += os.read(fd, 65536)
            assert output.endswith(RESET_SEQUENCE.encode()), output[-200:]
    finally:
        os.close(fd)
