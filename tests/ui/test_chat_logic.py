"""Units without an app: the conversation model, the deferred engine, verdicts, start-up values."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.fake_engine import FakeEngine
from mergechat.core.api import (
    CapabilitiesReady,
    ChatMessage,
    LoadRequest,
    MeasuredSpeed,
    ModelState,
)
from mergechat.core.detect.capabilities import (
    Assessment,
    Capabilities,
    ChoiceVerdict,
    DeviceInfo,
    ProbeResult,
    Recommendation,
)
from mergechat.core.settings.config import Config
from mergechat.core.settings.generation import GenerationSettings
from mergechat.ui.conversation import Conversation
from mergechat.ui.engine_proxy import DeferredEngine, EngineNotReadyError
from mergechat.ui.options import AppOptions
from mergechat.ui.start_config import effective_config, load_request
from mergechat.ui.verdicts import UNKNOWN, ShownVerdict, faster_text, precision_verdicts


def test_conversation_send_finish_regenerate_continue() -> None:
    chat = Conversation()
    assert not chat.can_regenerate and not chat.can_continue
    assert chat.add_user("hi") == [ChatMessage("user", "hi")]
    chat.begin(1, "new")
    assert chat.busy and chat.is_current(1) and not chat.is_current(2)
    chat.finish("Hello", "length")
    assert chat.messages[-1] == ChatMessage("assistant", "Hello")
    assert chat.can_continue and chat.can_regenerate
    chat.begin(2, "continue")
    chat.finish(" there", "complete")
    assert chat.messages[-1] == ChatMessage("assistant", "Hello there")
    assert not chat.can_continue
    assert chat.drop_last_reply() == [ChatMessage("user", "hi")]
    chat.begin(3, "regenerate")
    chat.fail()
    assert chat.messages == [ChatMessage("user", "hi")] and chat.can_regenerate
    chat.clear()
    assert chat.messages == [] and not chat.busy


def test_conversation_keeps_a_stopped_partial_reply_but_not_an_empty_one() -> None:
    chat = Conversation()
    chat.add_user("a")
    chat.begin(1, "new")
    chat.finish("", "stopped")
    assert [m.role for m in chat.messages] == ["user"]
    chat.begin(2, "regenerate")
    chat.finish("part", "stopped")
    assert chat.messages[-1] == ChatMessage("assistant", "part") and chat.can_continue


def test_deferred_engine_replays_calls_in_order() -> None:
    proxy = DeferredEngine()
    with pytest.raises(EngineNotReadyError):
        proxy.generate([ChatMessage("user", "x")], GenerationSettings())
    proxy.load(LoadRequest(Path("/m")))
    proxy.detect(Path("/m"), "cpu")
    proxy.switch_dtype("float32")
    proxy.cancel()  # nothing to stop yet: dropped
    engine = FakeEngine(lambda _e: None)
    proxy.attach(engine)
    assert proxy.ready
    assert [r.path for r in engine.loads] == [Path("/m")]
    assert engine.detections == [(Path("/m"), "cpu")] and engine.switches == ["float32"]
    assert engine.cancels == 0
    assert proxy.generate([ChatMessage("user", "x")], GenerationSettings()) == 1
    proxy.shutdown(0.1)
    assert engine.shut_down


def _caps() -> Capabilities:
    probes = (
        ProbeResult("cuda:0", "float32", "ok", 0.01, 1.0),
        ProbeResult("cuda:0", "bfloat16", "slow", 0.05, 4.25),
        ProbeResult("cuda:0", "float16", "unsupported", None, error="no kernel"),
    )
    return Capabilities((DeviceInfo("cuda:0", "cuda", "GPU", None, None),), probes, "2.13", 1.0)


def test_verdicts_prefer_the_assessment_then_the_probes() -> None:
    assert precision_verdicts(None, "cpu") == dict.fromkeys(
        ("float32", "bfloat16", "float16"), ShownVerdict(None, UNKNOWN)
    )
    ready = CapabilitiesReady(_caps())
    assert precision_verdicts(ready, None) == precision_verdicts(None, "cpu")  # a served model
    assert precision_verdicts(ready, "cuda:0") == {
        "float32": ShownVerdict("ok", "ok"),
        "bfloat16": ShownVerdict("slow", "slow 4.2x per turn"),
        "float16": ShownVerdict("unsupported", "unsupported: no kernel"),
    }
    fit = ChoiceVerdict("cuda:0", "float32", "does not fit", "does not fit: 9.1 GiB needed")
    assessment = Assessment((fit,), Recommendation("cuda:0", "bfloat16", None, "fastest"))
    verdicts = precision_verdicts(CapabilitiesReady(_caps(), assessment), "cuda:0")
    assert verdicts["float32"] == ShownVerdict("does not fit", "does not fit: 9.1 GiB needed")
    assert verdicts["float32"].blocked and not verdicts["bfloat16"].blocked
    assert verdicts["bfloat16"].text == "slow 4.2x per turn"


def test_the_loaded_precision_shows_its_measured_speed_and_a_faster_note() -> None:
    speed = MeasuredSpeed(170.0, 14.2, 150.0, 12.0, faster_dtype="float32", faster_by=2.14)
    state = ModelState(Path("/m"), "m", "cuda:0", "bfloat16", "bfloat16", 2048, speed=speed)
    verdicts = precision_verdicts(CapabilitiesReady(_caps()), "cuda:0", state)
    assert verdicts["bfloat16"].text == (
        "slow 4.2x per turn · measured on this model: decode 14 tok/s, prompts 170 tok/s "
        "(predicted 12 and 150)"
    )
    assert verdicts["float32"].text == "ok"  # only the loaded precision was measured
    assert faster_text(speed, "f3") == (
        "float32 would make chat turns about 2.1x faster on this machine (from this model's "
        "measured speed); press f3 to switch precision"
    )
    assert faster_text(MeasuredSpeed(1.0, 1.0), "f3") is None


def test_command_line_values_override_the_config_for_this_run() -> None:
    options = AppOptions(
        model_path=Path("/m"),
        device="cpu",
        dtype="fp16",
        generation_overrides={"top_k": 5, "bogus": 1},
        trust_remote_code=True,
    )
    config, problems = effective_config(Config(), options)
    assert problems == ["unknown generation setting 'bogus' ignored"]
    assert config.generation.top_k == 5
    request = load_request(config)
    assert (request.path, request.device, request.dtype, request.trust_remote_code) == (
        Path("/m"),
        "cpu",
        "float16",
        True,
    )
