"""One-shot mode: streaming, JSON output, warnings, failures and Ctrl+C, with a scripted engine."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from mergechat.cli.oneshot import JSON_KEYS, OneShotRequest, run_oneshot
from mergechat.core.api import (
    ChatMessage,
    EngineNotice,
    EventSink,
    FinishReason,
    LoadFailed,
    LoadProgress,
    LoadRequest,
    ModelLoaded,
    ModelState,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    ReplyStats,
)
from mergechat.core.detect.devices import require_device
from mergechat.core.dtypes import DType
from mergechat.core.errors import DeviceUnavailableError, MergechatError
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.streaming import ReplyStream


def _decode(ids: Sequence[int]) -> str:
    return "".join(chr(i) for i in ids)


class FakeEngine:
    """Answers like the real engine, from a script, on its own thread."""

    def __init__(
        self,
        sink: EventSink,
        *,
        reply: str = "Hello from the fake model.",
        fail_load: bool = False,
        fail_reply: bool = False,
        interrupt_drain: bool = False,
        token_delay: float = 0.0,
        load_warnings: tuple[str, ...] = (),
    ) -> None:
        self.sink = sink
        self.reply = reply
        self.fail_load = fail_load
        self.fail_reply = fail_reply
        self.interrupt_drain = interrupt_drain
        self.token_delay = token_delay
        self.load_warnings = load_warnings
        self.cancelled = threading.Event()
        self.calls: list[str] = []
        self.messages: list[ChatMessage] = []
        self.settings: GenerationSettings | None = None
        self.dtype: DType = "bfloat16"

    def start(self) -> None:
        self.calls.append("start")

    def load(self, request: LoadRequest) -> None:
        self.calls.append("load")
        self.sink(LoadProgress("reading", 0.5, "1 shard"))
        if self.fail_load:
            self.sink(LoadFailed("float16 is not supported on cpu", hint="choose bfloat16"))
            return
        if request.dtype != "auto":
            self.dtype = request.dtype
        state = ModelState(request.path, "fake", "cpu", self.dtype, "bfloat16", 512)
        self.sink(EngineNotice("probes read from cache", level="info"))
        self.sink(ModelLoaded(state, warnings=self.load_warnings))

    def generate(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        *,
        continue_last: bool = False,
    ) -> int:
        self.calls.append("generate")
        self.messages = list(messages)
        self.settings = settings
        decode = _decode
        if self.interrupt_drain:
            fired: list[bool] = []

            def decode(ids: Sequence[int]) -> str:
                # Simulates Ctrl+C arriving while the main thread drains the stream.
                if ids and not fired:
                    fired.append(True)
                    raise KeyboardInterrupt
                return _decode(ids)

        stream = ReplyStream(decode)
        threading.Thread(target=self._produce, args=(stream,), daemon=True).start()
        return 7

    def _produce(self, stream: ReplyStream) -> None:
        start = time.monotonic()
        self.sink(ReplyStarted(7, stream, prompt_tokens=5, context_max=512))
        self.sink(ReplyStarted(99, ReplyStream(_decode), prompt_tokens=1, context_max=1))
        text = ""
        for ch in self.reply:
            if self.cancelled.is_set():
                break
            stream.push([ord(ch)])
            text += ch
            time.sleep(self.token_delay)
        stream.close()
        if self.fail_reply:
            self.sink(ReplyFailed(7, "CUDA out of memory", partial_text=text, hint="use cpu"))
            return
        elapsed = time.monotonic() - start
        stats = ReplyStats(5, len(text), 0.01, elapsed, 42.0, 5 + len(text), 512, self.dtype, "cpu")
        finish: FinishReason = "stopped" if self.cancelled.is_set() else "complete"
        self.sink(ReplyFinished(7, text, stats, finish))

    def cancel(self) -> None:
        self.calls.append("cancel")
        self.cancelled.set()

    def switch_dtype(self, dtype: DType) -> None:
        raise NotImplementedError

    def detect(self, model_path: Path | None = None, device: str = "auto") -> None:
        raise NotImplementedError

    def shutdown(self, timeout: float = 5.0) -> None:
        self.calls.append("shutdown")


def _run(tmp_path: Path, *, json_output: bool = False, **engine_kwargs: object):  # type: ignore[no-untyped-def]
    engines: list[FakeEngine] = []

    def factory(sink: EventSink) -> FakeEngine:
        engines.append(FakeEngine(sink, **engine_kwargs))  # type: ignore[arg-type]
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
    assert out == "Hello from the fake model.\n"
    assert engine.calls == ["start", "load", "generate", "shutdown"]
    assert engine.messages == [ChatMessage("user", "Hi there")]
    assert engine.settings is not None and engine.settings.system_prompt == "Be brief."
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
    assert data["reply"] == "Hello from the fake model."
    assert data["dtype"] == "bfloat16" and data["device"] == "cpu"
    assert data["new_tokens"] == len("Hello from the fake model.")
    assert data["decode_tokens_per_s"] == 42.0


def test_load_failure_raises_with_hint(tmp_path: Path) -> None:
    with pytest.raises(MergechatError) as info:
        _run(tmp_path, fail_load=True)
    assert info.value.message == "float16 is not supported on cpu"
    assert info.value.hint == "choose bfloat16"
    assert info.value.exit_code == 1


def test_reply_failure_prints_partial_then_raises(tmp_path: Path) -> None:
    engines: list[FakeEngine] = []

    def factory(sink: EventSink) -> FakeEngine:
        engines.append(FakeEngine(sink, reply="partial", fail_reply=True))
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
        return FakeEngine(sink)

    out, err = io.StringIO(), _Terminal()
    request = OneShotRequest(LoadRequest(tmp_path), "x", GenerationSettings())
    assert run_oneshot(request, out=out, err=err, engine_factory=factory) == 0
    assert err.getvalue().startswith("\r\x1b[Kloading: reading 50% 1 shard\r\x1b[K")
    assert out.getvalue() == "Hello from the fake model.\n"
