"""``mergechat URL``: one-shot mode against a scripted server, the URL and flag checks, and each
fault as one ``mergechat: error:`` line with its exit code."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.scripted_server import Running, scripted_server
from mergechat.cli import main as cli
from mergechat.cli.oneshot import OneShotRequest, run_oneshot
from mergechat.core.api import LoadRequest
from mergechat.core.errors import BadInputError
from mergechat.core.model.target import RemotePath, parse_target, shown_model, url_text
from mergechat.core.remote.client import RemoteClient
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.store import HistoryStore, default_path


@pytest.fixture
def server() -> Iterator[Running]:
    with scripted_server() as running:
        yield running


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_the_same_keys_and_null_for_what_the_server_does_not_say(
    server: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, server.url, "--prompt", "hi", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert list(result) == [
        "reply", "device", "dtype", "prompt_tokens", "new_tokens", "ttft_s",
        "decode_tokens_per_s", "total_s",
    ]  # fmt: skip
    assert result["reply"] == "Hello there"
    assert (result["device"], result["dtype"]) == (None, None)
    assert (result["prompt_tokens"], result["new_tokens"]) == (7, 3)


def test_json_reports_the_servers_precision(
    server: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script.extra = {"/info": {"model_dtype": "torch.bfloat16", "model_device_type": "cuda"}}
    code, out, _ = _run(capsys, server.url, "--prompt", "hi", "--json", "--max-new-tokens", "9")
    assert code == 0
    assert (json.loads(out)["device"], json.loads(out)["dtype"]) == ("cuda", "bfloat16")
    assert server.script.requests[0]["max_tokens"] == 9


def test_history_keeps_the_url_and_model_but_never_the_key(
    server: Running, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script.key = "k-123"
    monkeypatch.setenv("MERGECHAT_API_KEY", "k-123")
    code, out, err = _run(capsys, server.url, "--prompt", "hello?")
    assert code == 0, err
    assert out == "Hello there\n"
    with HistoryStore.open() as store:
        (conversation,) = store.list_conversations()
        assert conversation.model_path == f"{server.url}#tiny-chat"
    assert b"k-123" not in default_path().read_bytes()


def test_escape_sequences_from_the_server_never_reach_a_terminal(server: Running) -> None:
    server.script.pieces = ["a\x1b]52;c;cHduZWQ=\x07", "b\x1b[2J"]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out, err = Terminal(), io.StringIO()
    request = OneShotRequest(
        LoadRequest(path=parse_target(server.url).path()),
        "hi",
        GenerationSettings(),
        record_history=False,
    )
    assert run_oneshot(request, out=out, err=err, engine_factory=RemoteClient) == 0
    assert "\x1b" not in out.getvalue() and "\\u001b]52;c;cHduZWQ=" in out.getvalue()


@pytest.mark.parametrize(
    ("chat", "code", "message"),
    [
        ("error500", 1, "HTTP 500"),
        ("disconnect", 1, "without finishing"),
    ],
)
def test_reply_failures_are_one_error_line(
    server: Running, capsys: pytest.CaptureFixture[str], chat: str, code: int, message: str
) -> None:
    server.script.chat = chat
    got, out, err = _run(capsys, server.url, "--prompt", "hi")
    assert got == code
    lines = [line for line in err.splitlines() if line.startswith("mergechat: error:")]
    assert len(lines) == 1 and message in lines[0] and "\x1b" not in err
    if chat == "disconnect":
        assert out == "Hello\n"  # the partial reply stays on screen


def test_load_failures(server: Running, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        ([server.url, "--model", "nope"], 2, "'nope' is not served"),
        ([f"http://127.0.0.1:{server.port}/wrong"], 2, "HTTP 404"),
        ([f"https://127.0.0.1:{server.port}/v1"], 2, "does not speak HTTPS"),
    ]
    for argv, code, message in cases:
        got, _, err = _run(capsys, *argv, "--prompt", "hi")
        assert (got, err.count("mergechat: error:")) == (code, 1), (argv, err)
        assert message in err
    server.script.models_body = b"<!doctype html><title>router</title>"
    got, _, err = _run(capsys, server.url, "--prompt", "hi")
    assert got == 2 and "not an OpenAI-compatible server" in err
    server.script.models_body, server.script.models = None, []
    got, _, err = _run(capsys, server.url, "--prompt", "hi")
    assert got == 1 and "lists no models" in err


def test_unreachable_and_not_http(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    got, _, err = _run(capsys, f"http://127.0.0.1:{port}", "--prompt", "hi")
    assert got == 1 and "connection refused" in err
    # A TLS server answering plain HTTP: bytes that are not an HTTP status line.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"\x15\x03\x01\x00\x02\x02\x46")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        got, _, err = _run(capsys, f"http://127.0.0.1:{port}/v1", "--prompt", "hi")
        thread.join(10)
    assert got == 2 and "did not answer in HTTP" in err and "https://" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ftp://host/v1"], None),
        (["http://user:pw@host:1/v1"], "must not hold a user name or key"),
        (["http://127.0.0.1:8000/v1", "--dtype", "float16"], "--dtype does not apply"),
        (["http://127.0.0.1:8000/v1", "--device", "cpu"], "--device does not apply"),
        (["/some/folder", "--model", "m"], "--model needs a server URL"),
        (["http://127.0.0.1:99999/v1"], "invalid server URL"),
        (["http://127.0.0.1:8000/v1", "--api-key", "x"], "unrecognized arguments"),
    ],
)
def test_bad_urls_and_flags_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str | None
) -> None:
    got, _, err = _run(capsys, *argv, "--prompt", "hi")
    assert got == 2 and err.startswith("mergechat: error:"), err
    if message:
        assert message in err


def test_plain_http_to_another_host_warns_once() -> None:
    target = parse_target("http://gpu-box.example:8000")
    assert target.base_url == "http://gpu-box.example:8000/v1"
    assert "unencrypted" in (target.plain_http_warning() or "")
    assert parse_target("https://gpu-box.example/v1").plain_http_warning() is None
    assert parse_target("http://[::1]:8000").plain_http_warning() is None
    assert parse_target("http://localhost:8000").plain_http_warning() is None


def test_remote_path_round_trip() -> None:
    path = parse_target("http://127.0.0.1:8000/v1/", "org/model").path()
    assert isinstance(path, RemotePath)
    assert str(path) == "http://127.0.0.1:8000/v1#org/model"
    plain = Path(str(path))  # how config and settings carry it
    assert url_text(plain) == str(path)
    assert parse_target(url_text(plain)).model == "org/model"
    assert shown_model(plain) == "127.0.0.1:8000 org/model"
    with pytest.raises(BadInputError):
        parse_target("http://:8000/v1")


def test_recent_models_keep_a_servers_url(tmp_path: Path) -> None:
    from mergechat.core.settings import recent_models

    served = parse_target("http://127.0.0.1:8000/v1", "m").path()
    state = tmp_path / "state.json"
    recent = recent_models.remember([], served, state)
    assert recent == ["http://127.0.0.1:8000/v1#m"]
    assert recent_models.load_recent([], state) == recent
    assert recent_models.remember(recent, Path(str(served)), state) == recent  # no duplicate
