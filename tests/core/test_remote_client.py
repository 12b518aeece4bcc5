"""`RemoteClient` against a scripted OpenAI-compatible server on 127.0.0.1: the stream, what the
server reports (TGI, llama.cpp, ollama, vLLM), and each fault as one message."""

from __future__ import annotations

import os
import queue
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.scripted_server import Running, scripted_server
from mergechat.core.api import (
    ChatMessage,
    EngineEvent,
    LoadFailed,
    LoadRequest,
    ModelLoaded,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    SwitchFailed,
)
from mergechat.core.model.target import RemotePath
from mergechat.core.remote.client import RemoteClient
from mergechat.core.remote.server_info import NOT_REPORTED
from mergechat.core.settings.generation import GenerationSettings

WAIT_S = 20.0


class Harness:
    """A started `RemoteClient` and the events it reported."""

    def __init__(self, timeout: float = 20.0) -> None:
        self.events: queue.Queue[EngineEvent] = queue.Queue()
        self.client = RemoteClient(self.events.put, timeout=timeout)
        self.client.start()

    def next(self, *kinds: type[EngineEvent]) -> EngineEvent:
        """The next event of one of ``kinds`` (others are skipped); fails after `WAIT_S`."""
        while True:
            event = self.events.get(timeout=WAIT_S)
            if isinstance(event, kinds):
                return event

    def load(self, url: str) -> ModelLoaded | LoadFailed:
        self.client.load(LoadRequest(path=RemotePath(url)))
        event = self.next(ModelLoaded, LoadFailed)
        assert isinstance(event, ModelLoaded | LoadFailed)
        return event

    def loaded(self, url: str) -> ModelLoaded:
        event = self.load(url)
        assert isinstance(event, ModelLoaded), event
        return event


@pytest.fixture
def harness() -> Iterator[Harness]:
    made = Harness()
    yield made
    made.client.shutdown(timeout=5)


@pytest.fixture
def server() -> Iterator[Running]:
    with scripted_server() as running:
        yield running


def _ask(harness: Harness, text: str = "hi", **settings: object) -> int:
    return harness.client.generate(
        [ChatMessage("user", text)],
        GenerationSettings(**settings),  # type: ignore[arg-type]
    )


def test_streams_a_reply_with_the_servers_usage(harness: Harness, server: Running) -> None:
    loaded = harness.loaded(server.url)
    state = loaded.state
    assert state.name == "tiny-chat"
    assert str(state.path) == f"{server.url}#tiny-chat"
    assert state.dtype == NOT_REPORTED  # this server says nothing about what it runs
    assert state.device == f"127.0.0.1:{server.port}"
    assert loaded.warnings == ()  # loopback: no plain-http warning
    request_id = _ask(harness, temperature=0.0, top_k=5, seed=3, system_prompt="Be brief.")
    started = harness.next(ReplyStarted)
    finished = harness.next(ReplyFinished, ReplyFailed)
    assert isinstance(started, ReplyStarted) and isinstance(finished, ReplyFinished)
    assert finished.request_id == request_id == started.request_id
    assert finished.text == "Hello there" and finished.finish == "complete"
    assert started.stream.drain() == "Hello there"
    stats = finished.stats
    assert (stats.prompt_tokens, stats.new_tokens) == (7, 3)
    assert (stats.dtype, stats.device) == ("", "")  # nothing reported: nothing claimed
    sent = server.script.requests[0]
    assert sent["model"] == "tiny-chat" and sent["stream"] is True
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (sent["temperature"], sent["seed"], sent["top_k"]) == (0.0, 3, 5)
    assert "repetition_penalty" not in sent  # only the settings given are sent


def test_model_flag_picks_a_served_model_and_rejects_others(
    harness: Harness, server: Running
) -> None:
    server.script.models = [{"id": "a"}, {"id": "b"}]
    assert harness.loaded(server.url + "#b").state.name == "b"
    assert harness.loaded(server.url).state.name == "a"  # the first one listed
    failed = harness.load(server.url + "#c")
    assert isinstance(failed, LoadFailed) and failed.exit_code == 2
    assert "'c' is not served" in failed.message and "a, b" in (failed.hint or "")
    # The model in use stays usable after a failed load.
    assert failed.state is not None and failed.state.name == "a"


@pytest.mark.parametrize(
    ("extra", "models", "dtype", "device", "context"),
    [
        (
            {
                "/info": {
                    "model_dtype": "torch.float16",
                    "model_device_type": "cuda",
                    "max_total_tokens": 4096,
                }
            },
            [{"id": "tiny-chat"}],
            "float16",
            "cuda",
            4096,
        ),
        (
            {
                "/props": {
                    "default_generation_settings": {"n_ctx": 8192},
                    "model_path": "/models/merge-70b.Q4_K_M.gguf",
                }
            },
            [{"id": "tiny-chat", "meta": {"n_ctx_train": 32768}}],
            "Q4_K_M (GGUF)",
            None,
            8192,
        ),
        (
            {
                "/api/ps": {
                    "models": [
                        {
                            "name": "tiny-chat",
                            "model": "tiny-chat",
                            "size": 1000,
                            "size_vram": 500,
                            "context_length": 2048,
                            "details": {"quantization_level": "Q4_0"},
                        }
                    ]
                }
            },
            [{"id": "tiny-chat"}],
            "Q4_0",
            "gpu 50% + cpu",
            2048,
        ),
        ({}, [{"id": "tiny-chat", "max_model_len": 16384}], None, None, 16384),
    ],
    ids=["tgi", "llama.cpp", "ollama", "vllm"],
)
def test_shows_what_the_server_reports(
    harness: Harness,
    server: Running,
    extra: dict[str, object],
    models: list[dict[str, object]],
    dtype: str | None,
    device: str | None,
    context: int,
) -> None:
    server.script.extra, server.script.models = extra, models
    state = harness.loaded(server.url).state
    assert state.dtype == (dtype or NOT_REPORTED)
    expected_device = f"127.0.0.1:{server.port}" + (f" · {device}" if device else "")
    assert state.device == expected_device
    assert state.context_max == context
    _ask(harness)
    finished = harness.next(ReplyFinished)
    assert isinstance(finished, ReplyFinished)
    assert (finished.stats.dtype or None, finished.stats.device or None) == (dtype, device)
    assert finished.stats.context_max == context


def test_key_is_sent_and_a_refusal_is_one_message(
    harness: Harness, server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script.key = "s3cret"
    monkeypatch.delenv("MERGECHAT_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    failed = harness.load(server.url)
    assert isinstance(failed, LoadFailed) and failed.exit_code == 2
    assert "HTTP 401" in failed.message and "MERGECHAT_API_KEY" in (failed.hint or "")
    assert "\x1b" not in failed.message  # the server's text is shown as text
    monkeypatch.setenv("MERGECHAT_API_KEY", "s3cret")
    harness.loaded(server.url)
    _ask(harness)
    assert isinstance(harness.next(ReplyFinished, ReplyFailed), ReplyFinished)


def test_key_from_the_config_file(
    harness: Harness, server: Running, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.script.key = "from-file"
    for name in ("MERGECHAT_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "config.toml"
    config.write_text('[remote]\napi_key = "from-file"\n')
    config.chmod(0o644)
    monkeypatch.setenv("MERGECHAT_CONFIG", str(config))
    loaded = harness.loaded(server.url)
    assert any("chmod 600" in warning for warning in loaded.warnings)
    assert "from-file" not in repr(loaded)  # the key is in no event


def _failed_reply(harness: Harness, server: Running, chat: str) -> ReplyFailed:
    """The reply that fails when the server answers the chat request as ``chat`` scripts."""
    harness.loaded(server.url)
    server.script.chat = chat
    _ask(harness)
    failed = harness.next(ReplyFinished, ReplyFailed)
    assert isinstance(failed, ReplyFailed)
    return failed


def test_server_error_before_the_stream(harness: Harness, server: Running) -> None:
    failed = _failed_reply(harness, server, "error500")
    assert "HTTP 500" in failed.message and "CUDA out of memory" in failed.message
    assert "\x1b" not in failed.message and failed.partial_text == ""


def test_disconnect_mid_stream_keeps_the_partial_reply(harness: Harness, server: Running) -> None:
    failed = _failed_reply(harness, server, "disconnect")
    assert failed.partial_text == "Hello"
    assert "without finishing" in failed.message


def test_no_first_byte_within_the_timeout(server: Running) -> None:
    quick = Harness(timeout=1.0)
    try:
        failed = _failed_reply(quick, server, "stall")
        assert "did not answer in time" in failed.message
    finally:
        quick.client.shutdown(timeout=5)


def test_cancel_closes_the_stream(harness: Harness, server: Running) -> None:
    harness.loaded(server.url)
    server.script.chat = "slow"
    _ask(harness)
    started = harness.next(ReplyStarted)
    assert isinstance(started, ReplyStarted)
    harness.client.cancel()
    finished = harness.next(ReplyFinished, ReplyFailed)
    assert isinstance(finished, ReplyFinished) and finished.finish == "stopped"
    assert len(finished.text.split()) < 400
    assert server.script.client_closed.wait(WAIT_S)  # the server saw the connection go


def test_precision_switch_explains_the_server_decides(harness: Harness, server: Running) -> None:
    harness.loaded(server.url)
    harness.client.switch_dtype("float16")
    failed = harness.next(SwitchFailed)
    assert isinstance(failed, SwitchFailed) and failed.state is not None
    assert "fixes the precision" in failed.message and "--dtype float16" in failed.message


def test_not_an_openai_server(harness: Harness, server: Running) -> None:
    server.script.models_body = b"<html><body>Welcome to nginx</body></html>"
    failed = harness.load(server.url)
    assert isinstance(failed, LoadFailed) and failed.exit_code == 2
    assert "not an OpenAI-compatible server" in failed.message and "text/html" in failed.message


def test_wrong_path_and_no_models(harness: Harness, server: Running) -> None:
    failed = harness.load(f"http://127.0.0.1:{server.port}/api")
    assert isinstance(failed, LoadFailed) and failed.exit_code == 2
    assert "HTTP 404" in failed.message
    server.script.models = []
    failed = harness.load(server.url)
    assert isinstance(failed, LoadFailed) and failed.exit_code == 1
    assert "lists no models" in failed.message


def test_connection_refused(harness: Harness) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again at once: nothing listens there
    failed = harness.load(f"http://127.0.0.1:{port}/v1")
    assert isinstance(failed, LoadFailed) and failed.exit_code == 1
    assert "connection refused" in failed.message


def test_https_to_a_plain_http_server(harness: Harness, server: Running) -> None:
    failed = harness.load(f"https://127.0.0.1:{server.port}/v1")
    assert isinstance(failed, LoadFailed) and failed.exit_code == 2
    assert "does not speak HTTPS" in failed.message


def test_what_mergechat_serve_passed_to_a_server_here(harness: Harness, server: Running) -> None:
    from mergechat.core.settings import served_record

    entry = {"engine": "transformers", "dtype": "bfloat16", "device": "cuda:0", "pid": os.getpid()}
    served_record.remember(server.port, {**entry, "model": "tiny-chat"})
    state = harness.loaded(server.url).state
    assert (state.dtype, state.device) == ("bfloat16", f"127.0.0.1:{server.port} · cuda:0")
    assert "started by mergechat serve" in state.reason
    served_record.remember(server.port, {**entry, "model": "another-model"})
    assert harness.loaded(server.url).state.dtype == NOT_REPORTED  # not this model's record
