"""One-shot mode: streaming, JSON output, warnings, failures and Ctrl+C, with a scripted engine."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from fixtures.fake_engine import FakeEngine, Script, fixed_stats
from mergechat.cli.oneshot import JSON_KEYS, OneShotRequest, run_oneshot
from mergechat.core.api import (
    ChatMessage,
    EventSink,
    LoadRequest,
)
from mergechat.core.detect.devices import require_device
from mergechat.core.errors import DeviceUnavailableError, MergechatError
from mergechat.core.settings.generation import GenerationSettings

REPLY = "Hello from the fake model."


def _script(**changes: Any) -> Script:
    """The one-shot's script: one load step, an info notice, the reply one character a token."""
    script = Script(
        reply=list(REPLY),
        load_stages=(("reading", 0.5, "1 shard"),),
        load_notices=("probes read from cache",),
        stray_reply=True,
    )
    for name, value in changes.items():
        if name == "reply":
            value = list(value)
        setattr(script, name, value)
    return script


def _run(tmp_path: Path, *, json_output: bool = False, **changes: Any):  # type: ignore[no-untyped-def]
    engines: list[FakeEngine] = []

    def factory(sink: EventSink) -> FakeEngine:
        engines.append(FakeEngine(sink, _script(**changes)))
        return engines[0]

    out, err = io.StringIO(), io.StringIO()
    request = OneShotRequest(
        LoadRequest(tmp_path),
        "Hi there",
        GenerationSettings(temperature=0.0, system_prompt="Be brief."),
        json_output=json_output,
    )
    code = run_oneshot(request, out=out, err=err, engine_factory=factory)
    return code, out.getvalue(), err.getvalue(), engines[0]


def test_streams_reply_with_final_newline(tmp_path: Path) -> None:
    code, out, err, engine = _run(tmp_path, token_delay=0.002)
    assert code == 0
    assert out == REPLY + "\n"
    assert engine.calls == ["start", "load", "generate", "shutdown"]
    messages, settings, _ = engine.generations[0]
    assert messages == [ChatMessage("user", "Hi there")]
    assert settings.system_prompt == "Be brief."
    # The info notice goes to stderr as a note; no progress line outside a terminal.
    assert err == "mergechat: note: probes read from cache\n"


def test_load_warnings_go_to_stderr(tmp_path: Path) -> None:
    code, out, err, _ = _run(tmp_path, load_warnings=("no chat template;\n using ChatML",))
    assert code == 0
    assert "mergechat: warning: no chat template; using ChatML\n" in err
    assert "warning" not in out


def test_json_output_is_one_object(tmp_path: Path) -> None:
    code, out, _, _ = _run(tmp_path, json_output=True)
    assert code == 0
    assert out.count("\n") == 1
    data = json.loads(out)
    assert tuple(data) == JSON_KEYS
    assert data["reply"] == REPLY
    assert data["dtype"] == "bfloat16" and data["device"] == "cpu"
    assert data["new_tokens"] == len(REPLY)
    assert data["decode_tokens_per_s"] == fixed_stats(1, 1, "bfloat16", "cpu").decode_tokens_per_s


def test_load_failure_raises_with_hint(tmp_path: Path) -> None:
    with pytest.raises(MergechatError) as info:
        _run(tmp_path, load_error="float16 is not supported on cpu", load_hint="choose bfloat16")
    assert info.value.message == "float16 is not supported on cpu"
    assert info.value.hint == "choose bfloat16"
    assert info.value.exit_code == 1


def test_reply_failure_prints_partial_then_raises(tmp_path: Path) -> None:
    engines: list[FakeEngine] = []

    def factory(sink: EventSink) -> FakeEngine:
        script = _script(reply="partial", reply_error="CUDA out of memory", reply_hint="use cpu")
        script.reply_error_at = len("partial")  # after the whole text
        engines.append(FakeEngine(sink, script))
        return engines[0]

    out = io.StringIO()
    request = OneShotRequest(LoadRequest(tmp_path), "x", GenerationSettings())
    with pytest.raises(MergechatError, match="CUDA out of memory"):
        run_oneshot(request, out=out, err=io.StringIO(), engine_factory=factory)
    assert out.getvalue() == "partial\n"
    assert engines[0].calls[-1] == "shutdown"


def test_ctrl_c_cancels_and_keeps_partial_reply(tmp_path: Path) -> None:
    reply = "word " * 400
    code, out, _, engine = _run(tmp_path, reply=reply, interrupt_drain=True, token_delay=0.001)
    assert code == 130
    assert "cancel" in engine.calls and engine.calls[-1] == "shutdown"
    assert out.endswith("\n")
    assert 0 < len(out.strip()) < len(reply.strip())
    assert reply.startswith(out.rstrip("\n"))


def test_ctrl_c_in_json_mode_still_prints_json(tmp_path: Path) -> None:
    code, out, _, _ = _run(
        tmp_path, json_output=True, reply="x" * 2000, interrupt_drain=True, token_delay=0.001
    )
    assert code == 130
    data = json.loads(out)
    assert 0 < len(data["reply"]) < 2000
    assert data["dtype"] == "bfloat16"


def test_require_device_accepts_cpu_and_auto() -> None:
    require_device("cpu")
    require_device("auto")


def test_require_device_rejects_missing_cuda() -> None:
    import torch

    if torch.cuda.device_count() > 3:
        pytest.skip("this machine really has cuda:3")
    with pytest.raises(DeviceUnavailableError, match=r"cuda:3 is not available") as info:
        require_device("cuda:3")
    assert info.value.exit_code == 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_only_on_a_terminal_and_erased(tmp_path: Path) -> None:
    def factory(sink: EventSink) -> FakeEngine:
        return FakeEngine(sink, _script())

    out, err = io.StringIO(), _Terminal()
    request = OneShotRequest(LoadRequest(tmp_path), "x", GenerationSettings())
    assert run_oneshot(request, out=out, err=err, engine_factory=factory) == 0
    assert err.getvalue().startswith("\r\x1b[Kloading: reading 50% 1 shard\r\x1b[K")
    assert out.getvalue() == REPLY + "\n"
