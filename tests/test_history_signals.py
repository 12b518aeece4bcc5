"""SIGHUP/SIGTERM mid-reply to a real `mergechat` process: the prompt and the partial reply stay.

A dropped SSH session sends SIGHUP; `kill` sends SIGTERM. Each test runs `python -m mergechat` on
the tiny model with a long greedy reply and opens the history store afterwards.
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

from mergechat.core.history import HistoryStore
from mergechat.core.history_types import Conversation

# Greedy decoding of the random tiny model does not stop early on this prompt (checked: 400
# tokens), so the reply is still streaming when the signal arrives.
PROMPT = "Tell me a long story"
# Long enough that the reply is still streaming when the signal comes, even on a fast machine.
FLAGS = ["--max-new-tokens", "6000", "--temperature", "0", "--dtype", "float32"]
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


def test_oneshot_saves_prompt_and_partial_reply_on_sighup(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    signum = signal.SIGHUP  # SIGTERM takes the same path (tests/test_oneshot_history.py)
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
    # Saved exactly as far as it had reached stdout.
    assert reply.text and reply.text == out


class _Terminal:
    """`mergechat` run in a pseudo-terminal, as over SSH; its output is read continuously."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: a session leader whose controlling terminal is the pty
            try:
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


def test_app_in_a_terminal_saves_the_prompt_on_sighup(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    term = _Terminal([str(tiny_model_dir), *FLAGS], _env(data))
    try:
        _send_when_ready(term, data)

        # The streaming reply is saved about once a second: wait for its first save.
        def reply_text() -> str:
            messages = _conversations(data)[0].messages
            return messages[1].text if len(messages) == 2 else ""

        _wait(reply_text, 10, "the reply's first save")
        streamed = reply_text()
        os.kill(term.pid, signal.SIGHUP)
        assert term.wait(timeout=30) == 0
    finally:
        term.close()
    [conv] = _conversations(data)
    user, reply = conv.messages
    assert (user.role, user.text) == ("user", PROMPT)
    assert (reply.role, reply.state) == ("assistant", "stopped")
    assert reply.text.startswith(streamed)  # and what streamed after that save, up to the signal
    # The terminal was given back: alternate screen left, cursor shown.
    assert b"\x1b[?1049l" in term.output and b"Traceback" not in term.output


def test_app_exits_when_the_terminal_hangs_up(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    term = _Terminal([str(tiny_model_dir), *FLAGS], _env(data))
    try:
        _send_when_ready(term, data)
    finally:
        term.close()  # as sshd does when the connection drops: the kernel sends SIGHUP
    term.wait(timeout=30)
    [conv] = _conversations(data)
    user, reply = conv.messages
    assert (user.role, user.text) == ("user", PROMPT)
    assert reply.role == "assistant" and reply.state in ("stopped", "complete")
