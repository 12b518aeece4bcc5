"""`top1_agreement`: one forward pass scores a reply against the model's own top-1 choices."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest

from mergechat.core.api import AgreementScored, ChatMessage, EngineEvent, LoadFailed, LoadRequest
from mergechat.core.engine.agreement import top1_agreement
from mergechat.core.settings.generation import GenerationSettings

pytestmark = pytest.mark.slow


def test_a_models_own_greedy_reply_agrees_fully_and_a_changed_token_is_the_first_miss(
    tiny_model_dir: Path,
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompt = torch.tensor([[1, 17, 42, 99, 5]])
    with torch.inference_mode():
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=12,
            min_new_tokens=12,
            do_sample=False,
        )
    reply = out[0, prompt.shape[1] :].tolist()
    assert len(reply) == 12
    agreement = top1_agreement(model, prompt, reply)
    assert (agreement.matched, agreement.tokens, agreement.first_miss) == (12, 12, None)
    assert agreement.score == 1.0

    changed = list(reply)
    changed[4] = (changed[4] + 1) % model.config.vocab_size
    agreement = top1_agreement(model, prompt, changed)
    assert agreement.first_miss == 4
    assert agreement.matched < 12
    assert top1_agreement(model, prompt, []).score is None


def _next_scored(events: queue.Queue[EngineEvent]) -> AgreementScored:
    while True:
        event = events.get(timeout=120)
        if isinstance(event, AgreementScored):
            return event
        if isinstance(event, LoadFailed):
            raise AssertionError(event.message)


def test_the_engine_process_scores_a_reply_under_the_apps_request_id(
    tiny_model_dir: Path,
) -> None:
    from mergechat.core.engine.process import ProcessEngine

    events: queue.Queue[EngineEvent] = queue.Queue()
    engine = ProcessEngine(events.put)
    try:
        engine.start()
        engine.load(LoadRequest(tiny_model_dir, device="cpu"))
        settings = GenerationSettings(temperature=0.0)
        request_id = engine.score_agreement([ChatMessage("user", "hi")], settings, "hello there")
        scored = _next_scored(events)
    finally:
        engine.shutdown()
    assert scored.request_id == request_id and scored.message is None
    assert scored.tokens > 0 and 0 <= scored.matched <= scored.tokens


def test_a_served_model_says_agreement_is_not_available() -> None:
    from mergechat.core.remote.client import RemoteClient

    events: queue.Queue[EngineEvent] = queue.Queue()
    client = RemoteClient(events.put)
    client.start()
    try:
        client.score_agreement([ChatMessage("user", "hi")], GenerationSettings(), "hello")
        scored = _next_scored(events)
    finally:
        client.shutdown()
    assert scored.message == "not available for served models" and scored.score is None
