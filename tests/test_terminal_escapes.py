"""Issue 16: nothing reaches the terminal raw, and the command line's first checks.

A model whose token is OSC 52 (clipboard) + OSC 0 (title) + ``ESC[2J`` answers in one-shot mode;
the bytes read back from a pty must hold those sequences only as visible text, while a pipe (or
``--raw``) gets them as they are. Also: non-UTF-8 ``--prompt``, the app without a terminal,
closed stdout, and the messages of issue 16 item 12.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from fixtures.cli_process import run_mergechat
from fixtures.escape_model import ESCAPES, RAW_MARKERS, build_escape_model
from mergechat.cli import main as cli
from mergechat.core.engine.error_translation import translate
from mergechat.core.errors import ModelFolderError
from mergechat.core.store.store import HistoryStore, default_path
from mergechat.core.visible import VisibleStream, escape_control, shown_path

ONESHOT = ["--prompt", "hi", "--max-new-tokens", "3", "--temperature", "0", "--device", "cpu"]
SHOWN = b"\\u001b]52;c;cHduZWQ=\\u0007\\u001b]0;pwned-title\\u0007\\u001b[2J"


@pytest.fixture(scope="module")
def escape_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_escape_model(tmp_path_factory.mktemp("models") / "escapes")


def _drain(master: int, timeout: float = 120.0) -> bytes:
    """Everything written to the pty until its other end is closed."""
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            raise AssertionError("nothing more came from the pty")
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the writer closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def pty_stdout(monkeypatch: pytest.MonkeyPatch) -> tuple[int, io.TextIOWrapper]:
    """Make ``sys.stdout`` a pty's writing end (in the test body: pytest's capture resets it
    between phases); returns (master fd, that stream)."""
    master, slave = os.openpty()
    stream = open(slave, "w", encoding="utf-8")  # noqa: SIM115 (closed by _pty_output)
    monkeypatch.setattr(sys, "stdout", stream)
    return master, stream


def _pty_output(master: int, stream: io.TextIOWrapper) -> bytes:
    stream.close()
    try:
        return _drain(master, timeout=5)
    finally:
        os.close(master)


# -- the helper -----------------------------------------------------------------------------------
def test_escape_control_keeps_lines_and_shows_everything_else() -> None:
    text = "a\tb\r\nc\x1b[2J\rd\x9b31m\x00"
    assert escape_control(text, keep_lines=True) == "a\tb\r\nc\\u001b[2J\\u000dd\\u009b31m\\u0000"
    assert escape_control("a\nb") == "a\\u000ab"


def test_visible_stream_holds_a_cr_until_it_knows_it_is_a_crlf() -> None:
    stream = VisibleStream()
    assert stream.feed("a\r") == "a"
    assert stream.feed("\nb\r") == "\r\nb"
    assert stream.feed("c") == "\\u000dc"
    assert stream.feed("\r") == "" and stream.flush() == "\\u000d"


def test_shown_path_makes_a_trailing_newline_visible() -> None:
    assert shown_path("/m/good") == "/m/good"
    assert shown_path("/m/good\n") == "'/m/good\\n'"
    assert shown_path("/m/caf\udce9") == "'/m/caf\\udce9'"


# -- one-shot output ------------------------------------------------------------------------------
@pytest.mark.slow
def test_oneshot_on_a_pty_shows_the_escapes_as_text(escape_model: Path) -> None:
    """A real process whose stdout is a pty: the bytes the terminal gets."""
    master, slave = os.openpty()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "mergechat", str(escape_model), *ONESHOT, "--no-history"]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, env=env
    )
    os.close(slave)
    try:
        written = _drain(master)
    finally:
        os.close(master)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert SHOWN in written
    for marker in RAW_MARKERS:
        assert marker not in written
    assert b"\x07" not in written


def test_oneshot_raw_flag_writes_the_bytes_to_a_pty(
    escape_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    master, stream = pty_stdout(monkeypatch)
    assert cli.main([str(escape_model), *ONESHOT, "--no-history", "--raw"]) == 0
    written = _pty_output(master, stream)
    assert ESCAPES.encode() in written and SHOWN not in written


def test_oneshot_to_a_pipe_keeps_the_bytes_and_the_history_keeps_the_text(
    escape_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([str(escape_model), *ONESHOT]) == 0
    assert capsys.readouterr().out.startswith(ESCAPES)  # not a terminal: raw, as asked
    with HistoryStore.open() as store:
        (summary,) = store.list_conversations()
        reply = store.get_conversation(summary.id).messages[-1]
    assert reply.text.startswith(ESCAPES)


def test_history_export_to_a_terminal_is_escaped_and_to_a_pipe_raw(
    escape_model: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cli.main([str(escape_model), *ONESHOT]) == 0
    capsys.readouterr()
    assert cli.main(["history", "export", "--last", "-o", "-"]) == 0
    assert ESCAPES in capsys.readouterr().out
    for fmt in ("md", "json"):
        master, stream = pty_stdout(monkeypatch)
        assert cli.main(["history", "export", "--last", "-o", "-", "--format", fmt]) == 0
        written = _pty_output(master, stream)
        assert b"\x1b" not in written and b"\x07" not in written, fmt
        assert SHOWN in written, fmt
        if fmt == "json":  # still valid JSON, with the exact text
            assert ESCAPES in json.loads(written)["conversation"]["messages"][-1]["text"]


# -- item 7: text that is not UTF-8 ---------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--prompt", "--system"])
def test_non_utf8_text_is_one_error_and_nothing_is_saved(
    flag: str, escape_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = os.fsdecode(b"caf\xe9")  # how Python hands a Latin-1 argv to a UTF-8 program
    argv = [str(escape_model), *ONESHOT, flag, bad]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mergechat: error: argument {flag}: not valid UTF-8 text (byte 0xe9")
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert not default_path().exists()  # no empty "New conversation"


# -- item 9: the app needs a terminal ------------------------------------------------------------
def test_the_app_refuses_to_start_without_a_terminal(tmp_path: Path) -> None:
    proc = run_mergechat(str(tmp_path), stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert (
        lines[0] == "mergechat: error: the app needs a terminal, but its standard input is not one"
    )
    assert "--prompt" in lines[1] and len(lines) == 2


# -- item 10: closed stdout -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "args", [["doctor", "--json"], ["history", "list"], ["MODEL", "--prompt", "hi"], ["--version"]]
)
def test_closed_stdout_is_one_clear_error(args: list[str], escape_model: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = [str(escape_model) if a == "MODEL" else a for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "mergechat", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        timeout=60,
        preexec_fn=lambda: os.close(1),  # what `>&-` does
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("mergechat: error: standard output is closed"), proc.stderr
    assert "Traceback" not in proc.stderr and "AttributeError" not in proc.stderr


# -- item 12: messages that name what failed ------------------------------------------------------
def test_a_permission_error_is_not_reported_as_a_missing_tokenizer() -> None:
    exc = PermissionError(13, "Permission denied")
    exc.filename = "/m/tokenizer.json"
    error = translate(exc)
    assert isinstance(error, ModelFolderError)
    assert error.message == "cannot read /m/tokenizer.json: permission denied"


def test_an_unreadable_tokenizer_json_is_named_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root a chmod 000 file is still readable, so the denial is simulated."""
    from mergechat.core.model.info import tokenizer_size_problem

    path = tmp_path / "tokenizer.json"
    path.write_text("{}")

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    problem = tokenizer_size_problem(path, 384, "config.json vocab_size")
    assert problem is not None
    assert problem.message == f"cannot read the tokenizer file {path}: Permission denied"


def test_a_broken_chat_template_says_it_is_the_chat_template(
    escape_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    folder = Path(shutil.copytree(escape_model, tmp_path / "bad-template"))
    (folder / "chat_template.jinja").write_text("{{ messages | no_such_filter }}")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert cli.main([str(folder), *ONESHOT, "--no-history"]) == 1
    err = capsys.readouterr().err
    (error,) = [line for line in err.splitlines() if line.startswith("mergechat: error: ")]
    assert error.startswith("mergechat: error: the model's chat template failed: "), err
    assert "no_such_filter" in error and "Traceback" not in err


def test_an_error_raised_inside_a_template_is_the_template_s() -> None:
    from jinja2 import Environment

    template = Environment().from_string("{{ 1 + messages }}")
    with pytest.raises(TypeError) as caught:
        template.render(messages="x")
    assert translate(caught.value).message.startswith("the model's chat template failed: ")
    assert not translate(TypeError("x")).message.startswith("the model's chat template")


# -- the real app on a pty ------------------------------------------------------------------------
def _read_until(master: int, marker: bytes, seen: bytearray, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    start = len(seen)
    while marker not in seen[start:]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {marker!r} from the app; last output: {bytes(seen[-500:])!r}")
        ready, _, _ = select.select([master], [], [], min(left, 0.5))
        if ready:
            seen += os.read(master, 65536)


@pytest.mark.slow
def test_the_app_on_a_pty_never_writes_the_reply_s_escapes(escape_model: Path) -> None:
    """The real app in a pty: the bytes it writes while the reply streams and is rendered."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color"}
    cmd = [sys.executable, "-m", "mergechat", str(escape_model), "--no-history"]
    cmd += ["--temperature", "0", "--max-new-tokens", "3", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    seen = bytearray()
    try:
        _read_until(master, b"Model loaded", seen, timeout=240)
        os.write(master, b"hi\r")
        _read_until(master, b"tok/s", seen, timeout=120)  # the reply's footer: it is rendered
        os.write(master, b"\x11")  # ctrl+q
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert b"cHduZWQ" in seen  # the reply was painted...
    for marker in RAW_MARKERS:  # ...as text
        assert marker not in seen
