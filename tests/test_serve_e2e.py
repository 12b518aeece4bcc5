"""A real `mergechat serve --engine transformers` on 127.0.0.1: it answers /v1/models and one
chat completion, records what it passed, and SIGTERM ends it and frees the port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from mergechat.core.settings import json_cache, served_record

pytestmark = pytest.mark.slow

#: Start-up (torch and transformers imports, the probe, loading the tiny model) on a busy CPU.
START_TIMEOUT_S = 240.0
REQUEST_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
        return json.load(response)


def _wait_for_models(base: str, server: subprocess.Popen[bytes], log: Path) -> Any:
    """Poll /v1/models until it answers; fail with the log if the server dies or never does."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"server exited {server.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(OSError):  # refused or reset while it starts
            return _get(f"{base}/models", timeout=5)
        time.sleep(0.5)
    pytest.fail(f"no answer from {base}/models in {START_TIMEOUT_S:.0f} s:\n{log.read_text()}")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a listener
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def test_serve_with_transformers_answers_a_chat_and_stops_on_sigterm(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    argv = [sys.executable, "-m", "mergechat", "serve", str(tiny_model_dir)]
    argv += ["--engine", "transformers", "--port", str(port)]
    with log.open("wb") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    children: list[psutil.Process] = []
    try:
        base = f"http://127.0.0.1:{port}/v1"
        listed = _wait_for_models(base, server, log)
        ids = [entry["id"] for entry in listed["data"]]
        assert ids, listed
        children = psutil.Process(server.pid).children(recursive=True)
        assert children, "the engine's server runs as mergechat's child"

        shown = log.read_text()
        assert f"connect    mergechat {base}" in shown, shown
        record = served_record.lookup(port)
        assert record is not None
        assert (record["engine"], record["url"]) == ("transformers", base)
        assert record["model"] in ids, (record, ids)
        assert f"precision  {record['dtype']} on {record['device']}" in shown

        reply = _post(
            f"{base}/chat/completions",
            {
                "model": ids[0],
                "messages": [{"role": "user", "content": "Hello"}],
                "max_tokens": 4,
                "stream": False,
            },
        )
        assert isinstance(reply["choices"][0]["message"]["content"], str), reply

        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    # uvicorn shuts down cleanly on the forwarded SIGTERM, then ends by that signal again;
    # mergechat exits as the server did (128 + SIGTERM, as a shell reports it).
    shown = log.read_text()
    assert code == 128 + signal.SIGTERM, shown[-4000:]
    assert "Shutting down" in shown, shown[-4000:]
    assert not any(_alive(child) for child in children)
    assert _port_is_free(port)
    with pytest.raises(urllib.error.URLError):
        _get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
    assert str(port) not in json_cache.read_entries(
        served_record.record_file(), served_record.RECORD_VERSION
    )
