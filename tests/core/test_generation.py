"""Replies: chat template, context fit, generation defaults and overrides, finish reasons."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from engine_harness import Harness, ask, copy_model, running, running_chatty
from transformers import GenerationConfig

from fixtures.tiny_models import build_tiny_llama
from mergechat.core.api import ChatMessage, ReplyFinished, ReplyStarted
from mergechat.core.engine.chat_prompt import CHATML_FALLBACK_TEMPLATE, build_prompt, conversation
from mergechat.core.engine.generation import generation_config
from mergechat.core.engine.hooks import CancelCriteria
from mergechat.core.errors import BadInputError
from mergechat.core.settings.generation import GenerationSettings

LONG = "The capital of France is Paris. The capital of Italy is Rome. " * 3


@pytest.fixture(scope="module")
def chatty(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_chatty(tmp_path_factory, tiny_model_dir) as harness:
        yield harness


def _text(tokenizer: Any, prompt: Any) -> str:
    return str(tokenizer.decode(prompt.input_ids[0]))


# -- prompt building (no model) ------------------------------------------------------------------
def test_prompt_uses_the_models_template_and_the_system_prompt(tokenizer: Any) -> None:
    turns = conversation(ask("Hi"), GenerationSettings(system_prompt="Be terse."))
    prompt = build_prompt(tokenizer, turns, max_new_tokens=8, context_max=512)
    text = _text(tokenizer, prompt)
    assert text.startswith("<|im_start|>system\nBe terse.<|im_end|>")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.tokens == prompt.input_ids.shape[-1] and prompt.dropped == 0
    assert prompt.attention_mask.shape == prompt.input_ids.shape


def test_system_prompt_not_repeated_when_already_first() -> None:
    messages = [ChatMessage("system", "Be terse."), ChatMessage("user", "Hi")]
    turns = conversation(messages, GenerationSettings(system_prompt="Be terse."))
    assert [t["role"] for t in turns] == ["system", "user"]


def test_template_without_system_role_gets_the_system_prompt_folded_in(tokenizer: Any) -> None:
    strict = copy.deepcopy(tokenizer)
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    turns = conversation(ask("Hi"), GenerationSettings(system_prompt="Be terse."))
    prompt = build_prompt(strict, turns, max_new_tokens=8, context_max=512)
    assert _text(strict, prompt).startswith("<|im_start|>user\nBe terse.\n\nHi<|im_end|>")


def test_continue_last_leaves_the_assistant_turn_open(tokenizer: Any) -> None:
    messages = [ChatMessage("user", "Capital of France?"), ChatMessage("assistant", "It is")]
    prompt = build_prompt(
        tokenizer,
        conversation(messages, GenerationSettings()),
        max_new_tokens=8,
        context_max=512,
        continue_last=True,
    )
    assert _text(tokenizer, prompt).endswith("<|im_start|>assistant\nIt is")


def test_long_history_drops_oldest_turns_but_keeps_system(tokenizer: Any) -> None:
    history: list[ChatMessage] = []
    for i in range(30):
        history += [ChatMessage("user", f"Q{i} {LONG}"), ChatMessage("assistant", f"A{i} {LONG}")]
    history.append(ChatMessage("user", "Last question?"))
    turns = conversation(history, GenerationSettings(system_prompt="Be terse."))
    prompt = build_prompt(tokenizer, turns, max_new_tokens=32, context_max=512)
    text = _text(tokenizer, prompt)
    assert prompt.dropped > 0
    assert prompt.tokens + 32 <= 512
    assert text.startswith("<|im_start|>system\nBe terse.")
    assert text.endswith("Last question?<|im_end|>\n<|im_start|>assistant\n")
    # The first kept turn after the system prompt is a user turn, and the kept ones are the newest.
    assert text.split("<|im_start|>")[2].startswith("user\n")
    kept = 61 - prompt.dropped
    assert f"Q{30 - kept // 2}" in text or f"A{30 - (kept + 1) // 2}" in text
    # Turns go in user/assistant pairs, and keeping one more pair would not have fitted.
    assert prompt.dropped % 2 == 0
    bigger = build_prompt(
        tokenizer, turns[:1] + turns[prompt.dropped - 1 :], max_new_tokens=32, context_max=10**5
    )
    assert bigger.tokens + 32 > 512


def test_a_single_message_longer_than_the_context_is_a_clear_error(tokenizer: Any) -> None:
    with pytest.raises(BadInputError, match="context holds 64"):
        build_prompt(
            tokenizer, [{"role": "user", "content": LONG * 3}], max_new_tokens=8, context_max=64
        )


def test_max_new_tokens_is_capped_by_the_context(tokenizer: Any) -> None:
    prompt = build_prompt(
        tokenizer, [{"role": "user", "content": "Hi"}], max_new_tokens=500, context_max=40
    )
    assert prompt.max_new_tokens == 40 - prompt.tokens


def test_fallback_template_is_chatml(tokenizer: Any) -> None:
    prompt = build_prompt(
        tokenizer,
        [{"role": "user", "content": "Hi"}],
        max_new_tokens=8,
        context_max=512,
        fallback_template=True,
    )
    assert _text(tokenizer, prompt).endswith(
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "im_start" in CHATML_FALLBACK_TEMPLATE


# -- generation config ---------------------------------------------------------------------------
def _model(**defaults: Any) -> Any:
    return SimpleNamespace(generation_config=GenerationConfig(eos_token_id=2, **defaults))


def test_defaults_come_from_generation_config_and_overrides_win(tokenizer: Any) -> None:
    model = _model(do_sample=True, temperature=0.7, top_p=0.9, top_k=20, repetition_penalty=1.1)
    config = generation_config(model, tokenizer, GenerationSettings(), 16)
    assert (config.do_sample, config.temperature, config.top_p, config.top_k) == (
        True,
        0.7,
        0.9,
        20,
    )
    assert config.repetition_penalty == 1.1 and config.max_new_tokens == 16
    settings = GenerationSettings(temperature=1.3, top_p=0.5, top_k=5, repetition_penalty=1.2)
    config = generation_config(model, tokenizer, settings, 16)
    assert (config.temperature, config.top_p, config.top_k, config.repetition_penalty) == (
        1.3,
        0.5,
        5,
        1.2,
    )
    assert model.generation_config.temperature == 0.7, "the model's own config is not modified"


def test_temperature_zero_and_greedy_default_mean_no_sampling(tokenizer: Any) -> None:
    sampled = _model(do_sample=True, temperature=0.7)
    assert (
        generation_config(sampled, tokenizer, GenerationSettings(temperature=0), 8).do_sample
        is False
    )
    greedy = generation_config(_model(), tokenizer, GenerationSettings(), 8)
    assert greedy.do_sample is False and greedy.temperature is None
    assert greedy.pad_token_id == tokenizer.pad_token_id


def test_cancel_criteria_reads_the_event() -> None:
    event = threading.Event()
    criteria = CancelCriteria(event, "cpu")
    ids = torch.zeros(1, 3, dtype=torch.long)
    assert not bool(criteria(ids, None).any())
    event.set()
    assert bool(criteria(ids, None).all())


# -- replies on the engine thread ----------------------------------------------------------------
def test_max_new_tokens_finishes_with_length(chatty: Harness) -> None:
    _, finished = chatty.reply(ask("Hello"), GenerationSettings(max_new_tokens=6))
    assert finished.finish == "length"
    assert finished.stats.new_tokens == 6


def test_cancel_mid_reply_keeps_the_partial_text(chatty: Harness) -> None:
    request_id = chatty.engine.generate(
        ask("Tell me a story"), GenerationSettings(max_new_tokens=64)
    )
    started = chatty.wait_for(ReplyStarted)
    while started.stream.token_count < 3 and not started.stream.closed:
        threading.Event().wait(0.001)
    chatty.engine.cancel()
    finished = chatty.wait_for(ReplyFinished)
    assert finished.request_id == request_id
    assert finished.finish == "stopped"
    assert 3 <= finished.stats.new_tokens < 64
    started.stream.drain()
    assert finished.text == started.stream.text and finished.text
    # The next reply is not affected by the cancel.
    _, after = chatty.reply(ask("Hello"), GenerationSettings(max_new_tokens=4))
    assert after.finish == "length"


def test_greedy_is_deterministic_and_seeded_sampling_repeats(chatty: Harness) -> None:
    greedy = [chatty.reply(ask("Hi"), GenerationSettings(max_new_tokens=10))[1].text for _ in "ab"]
    assert greedy[0] == greedy[1]
    sampled = GenerationSettings(max_new_tokens=10, temperature=1.5, top_k=50, seed=7)
    runs = [chatty.reply(ask("Hi"), sampled)[1].text for _ in "ab"]
    assert runs[0] == runs[1]
    other = chatty.reply(ask("Hi"), GenerationSettings(max_new_tokens=10, temperature=1.5, seed=8))
    assert other[1].text != runs[0]


def test_multi_turn_and_system_prompt_grow_the_prompt(chatty: Harness) -> None:
    single, _ = chatty.reply(ask("Hello"))
    turns = [
        ChatMessage("user", "Hello"),
        ChatMessage("assistant", "Hi! How can I help you today?"),
        ChatMessage("user", "What is the capital of France?"),
    ]
    multi, finished = chatty.reply(turns)
    assert multi.prompt_tokens > single.prompt_tokens + 10
    assert finished.stats.prompt_tokens == multi.prompt_tokens
    system, _ = chatty.reply(
        ask("Hello"), GenerationSettings(max_new_tokens=4, system_prompt="Be terse.")
    )
    assert system.prompt_tokens > single.prompt_tokens


def test_long_history_is_truncated_and_reported(chatty: Harness) -> None:
    history: list[ChatMessage] = []
    for i in range(30):
        history += [ChatMessage("user", f"Q{i} {LONG}"), ChatMessage("assistant", f"A{i} {LONG}")]
    history.append(ChatMessage("user", "And now?"))
    started, finished = chatty.reply(history, GenerationSettings(max_new_tokens=16))
    assert started.dropped_messages > 0
    assert started.prompt_tokens + 16 <= started.context_max == 512
    assert finished.finish == "length"
    assert finished.stats.context_used == started.prompt_tokens + 16


def test_continue_last_generates_after_the_partial_answer(chatty: Harness) -> None:
    messages = [ChatMessage("user", "Capital of France?"), ChatMessage("assistant", "It is")]
    started, finished = chatty.reply(
        messages, GenerationSettings(max_new_tokens=4), continue_last=True
    )
    plain, _ = chatty.reply(messages[:1], GenerationSettings(max_new_tokens=4))
    assert finished.stats.new_tokens == 4
    assert started.prompt_tokens != plain.prompt_tokens


def test_eos_ends_with_complete_and_is_not_in_the_text(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Every token counts as an end of sequence: the very first one ends the reply.
    folder = copy_model(
        tiny_model_dir, tmp_path_factory.mktemp("gen") / "eos", eos_token_id=list(range(384))
    )
    with running(tmp_path_factory, folder) as harness:
        started, finished = harness.reply(ask("Hello"), GenerationSettings(max_new_tokens=8))
    assert finished.finish == "complete"
    assert finished.stats.new_tokens == 1
    assert finished.text == "" and started.stream.token_count == 0


def test_model_without_template_uses_the_named_fallback(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    folder = build_tiny_llama(tmp_path_factory.mktemp("gen") / "no-template", chat_template=False)
    with running(tmp_path_factory) as harness:
        loaded = harness.load(folder)
        assert loaded.state.fallback_template is True
        assert any("ChatML fallback" in w for w in loaded.warnings)
        started, finished = harness.reply(ask("Hello"), GenerationSettings(max_new_tokens=5))
    assert started.prompt_tokens > 0 and finished.stats.new_tokens >= 1
