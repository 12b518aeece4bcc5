"""The KV cache kept between turns: the same greedy replies as full prefills, shorter prefills,
and a full prefill whenever the prefix changed, the model changed, or a reply went wrong."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_harness import Harness, copy_model, running

from mergechat.core.api import (
    ChatMessage,
    LoadProgress,
    ReplyFinished,
    ReplyStarted,
    SwitchFinished,
)
from mergechat.core.engine import prompt_cache
from mergechat.core.engine.chat_prompt import Prompt
from mergechat.core.engine.generation import _generate_once_more_on_oom
from mergechat.core.engine.hooks import IdStreamer
from mergechat.core.engine.prompt_cache import PromptCache, common_prefix
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.streaming import ReplyStream

GREEDY = GenerationSettings(temperature=0, max_new_tokens=12)
QUESTIONS = (
    "The capital of France is Paris. What is the capital of Italy?",
    "And of Spain?",
    "Which of the three is the largest city?",
    "Thanks. Summarise the answers in one line.",
)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, never ending a reply early (every reply is exactly max_new_tokens)."""
    return copy_model(
        tiny_model_dir, tmp_path_factory.mktemp("kv") / "long-replies", min_new_tokens=64
    )


@pytest.fixture(scope="module")
def reusing(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running(tmp_path_factory, model, device="cpu", dtype="float32") as harness:
        yield harness


@pytest.fixture(scope="module")
def fresh(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The same model in an engine that prefills every turn in full: the reference."""
    with running(
        tmp_path_factory, model, reuse_cache=False, device="cpu", dtype="float32"
    ) as harness:
        yield harness


def chat(
    harness: Harness, settings: GenerationSettings = GREEDY
) -> list[tuple[ReplyStarted, ReplyFinished]]:
    """Four turns, each answered on the conversation so far."""
    messages: list[ChatMessage] = []
    turns = []
    for question in QUESTIONS:
        messages.append(ChatMessage("user", question))
        started, finished = harness.reply(messages, settings)
        turns.append((started, finished))
        messages.append(ChatMessage("assistant", finished.text))
    return turns


def test_four_greedy_turns_with_the_kept_cache_match_full_prefills(
    reusing: Harness, fresh: Harness
) -> None:
    mine, reference = chat(reusing), chat(fresh)
    for (started, finished), (ref_started, ref_finished) in zip(mine, reference, strict=True):
        assert started.prompt_tokens == ref_started.prompt_tokens
        assert finished.stats.new_tokens == ref_finished.stats.new_tokens == 12
        assert finished.text == ref_finished.text
        assert ref_finished.stats.cached_tokens == 0
    assert all(finished.stats.cached_tokens > 0 for _, finished in mine[1:])


def test_half_precision_keeps_only_the_prompt_and_matches_full_prefills(
    model: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    half = {"device": "cpu", "dtype": "bfloat16"}
    with running(tmp_path_factory, model, **half) as harness:
        mine = chat(harness)
    with running(tmp_path_factory, model, reuse_cache=False, **half) as harness:
        reference = chat(harness)
    assert [f.text for _, f in mine] == [f.text for _, f in reference]
    # The reply's keys and values (written one token at a time) are not kept: the next turn
    # reuses exactly the previous prompt and prefills the reply with the new question.
    for (before, _), (_, finished) in itertools.pairwise(mine):
        assert finished.stats.cached_tokens == before.prompt_tokens


def test_the_next_turn_prefills_only_the_new_tokens(reusing: Harness) -> None:
    turns = chat(reusing)
    for (before, _), (started, finished) in itertools.pairwise(turns):
        # Everything the previous prompt held is reused; only the reply and the new question
        # (plus their template tokens) go through the model.
        assert before.prompt_tokens <= finished.stats.cached_tokens < started.prompt_tokens


def test_regenerate_reuses_the_prompt_and_repeats_the_greedy_reply(reusing: Harness) -> None:
    question = [ChatMessage("user", QUESTIONS[0])]
    _, first = reusing.reply(question, GREEDY)
    again_started, again = reusing.reply(question, GREEDY)
    # The whole prompt is cached: all but its last token are reused (one is always fed).
    assert again.stats.cached_tokens == again_started.prompt_tokens - 1
    assert again.text == first.text


def test_an_edited_message_or_a_new_system_prompt_prefills_from_the_change(
    reusing: Harness, fresh: Harness
) -> None:
    turns = chat(reusing)
    history = [ChatMessage("user", QUESTIONS[0]), ChatMessage("assistant", turns[0][1].text)]
    edited = [ChatMessage("user", "What is the capital of Germany?"), *history[1:]]
    edited.append(ChatMessage("user", QUESTIONS[1]))
    started, finished = reusing.reply(edited, GREEDY)
    # Only the template's opening tokens before the edited text are shared.
    assert finished.stats.cached_tokens < 10
    assert finished.text == fresh.reply(edited, GREEDY)[1].text
    system = GenerationSettings(temperature=0, max_new_tokens=12, system_prompt="Be terse.")
    started, finished = reusing.reply(edited, system)
    assert finished.stats.cached_tokens < 10
    assert started.prompt_tokens > 10
    assert finished.text == fresh.reply(edited, system)[1].text


def test_a_precision_switch_drops_the_cache(
    model: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    question = [ChatMessage("user", QUESTIONS[0])]
    with running(tmp_path_factory, model, device="cpu", dtype="float32") as harness:
        harness.reply(question, GREEDY)
        assert harness.reply(question, GREEDY)[1].stats.cached_tokens > 0
        assert isinstance(harness.switch("bfloat16"), SwitchFinished)
        assert harness.reply(question, GREEDY)[1].stats.cached_tokens == 0
        assert harness.reply(question, GREEDY)[1].stats.cached_tokens > 0
        harness.load(model, device="cpu", dtype="float32")
        assert harness.reply(question, GREEDY)[1].stats.cached_tokens == 0


def test_a_cancelled_reply_leaves_no_cache_behind(reusing: Harness) -> None:
    question = [ChatMessage("user", QUESTIONS[0])]
    reusing.reply(question, GREEDY)
    request_id = reusing.engine.generate(question, GenerationSettings(max_new_tokens=64))
    started = reusing.wait_for(ReplyStarted)
    while started.stream.token_count < 2 and not started.stream.closed:
        threading.Event().wait(0.001)
    reusing.engine.cancel()
    stopped = reusing.wait_for(ReplyFinished)
    assert stopped.request_id == request_id and stopped.finish == "stopped"
    assert reusing.reply(question, GREEDY)[1].stats.cached_tokens == 0


def test_a_conversation_longer_than_the_context_trims_and_still_reuses_the_system_prompt(
    reusing: Harness, fresh: Harness
) -> None:
    long = "The capital of France is Paris. The capital of Italy is Rome. " * 3
    system = GenerationSettings(
        temperature=0, max_new_tokens=12, system_prompt="You answer questions about capitals."
    )
    history: list[ChatMessage] = []
    for i in range(12):
        history += [ChatMessage("user", f"Q{i} {long}"), ChatMessage("assistant", f"A{i} {long}")]
    history.append(ChatMessage("user", "And now?"))
    started, _ = reusing.reply(history, system)
    assert started.dropped_messages > 0
    longer = [*history, ChatMessage("assistant", "Fine."), ChatMessage("user", "And then?")]
    started, finished = reusing.reply(longer, system)
    assert started.dropped_messages > 0
    assert started.prompt_tokens + 12 <= started.context_max
    # The oldest kept turn changed, but the system prompt before it is still reused.
    assert finished.stats.cached_tokens >= 8
    assert finished.text == fresh.reply(longer, system)[1].text


# -- the cache object on its own -------------------------------------------------------------------
def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([1, 2, 3], [1, 2]) == 2
    assert common_prefix([], [1]) == 0


def _dynamic_cache(tokens: int) -> Any:
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache()
    cache.update(torch.zeros(1, 2, tokens, 4), torch.zeros(1, 2, tokens, 4), 0)
    return cache


def test_take_crops_to_the_shared_prefix_and_leaves_one_token_to_feed() -> None:
    kept = PromptCache()
    kept.keep(_dynamic_cache(5), [1, 2, 3, 4, 5, 6])  # the last new id was never fed
    assert kept.held == 5
    cache, reused = kept.take([1, 2, 3, 9, 9], torch.device("cpu"))
    assert reused == 3 and cache.get_seq_length() == 3
    assert kept.held == 0  # taken: only a reply that ends well gives it back
    kept.keep(_dynamic_cache(5), [1, 2, 3, 4, 5])
    cache, reused = kept.take([1, 2, 3, 4, 5], torch.device("cpu"))
    assert reused == 4 and cache.get_seq_length() == 4


def test_a_cache_is_dropped_when_memory_is_short(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = PromptCache()
    kept.keep(_dynamic_cache(5), [1, 2, 3, 4, 5, 6])
    monkeypatch.setattr(prompt_cache, "free_bytes", lambda device: prompt_cache.MARGIN_BYTES)
    assert kept.take([1, 2, 3, 4, 5, 6, 7], torch.device("cpu")) == (None, 0)


def test_a_disabled_or_uncroppable_cache_is_never_kept() -> None:
    from transformers.cache_utils import DynamicSlidingWindowLayer

    off = PromptCache(enabled=False)
    off.keep(_dynamic_cache(3), [1, 2, 3, 4])
    assert off.held == 0
    # A sliding-window layer forgets old tokens: cropping it back is not exact.
    sliding = _dynamic_cache(3)
    sliding.layers = [DynamicSlidingWindowLayer(sliding_window=4)]
    sliding.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), 0)
    kept = PromptCache()
    kept.keep(sliding, [1, 2, 3, 4])
    assert kept.held == 0


class OutOfMemoryModel:
    """Runs out of memory in ``generate`` when given a cache (or always, with ``always``)."""

    device = torch.device("cpu")

    def __init__(self, *, always: bool = False) -> None:
        self.always = always
        self.calls: list[bool] = []

    def generate(self, **kwargs: Any) -> str:
        self.calls.append("cache" in kwargs)
        if self.always or "cache" in kwargs:
            raise MemoryError("cannot allocate memory")
        return "full"


def test_out_of_memory_with_a_cache_retries_once_with_a_full_prefill() -> None:
    ids = torch.ones(1, 3, dtype=torch.long)
    prompt = Prompt(ids, ids, 3, 0, 4)

    def attempt(model: OutOfMemoryModel, past: Any, cached: int) -> tuple[Any, int]:
        streamer = IdStreamer(ReplyStream(lambda ids: ""), set())
        return _generate_once_more_on_oom(
            model, prompt, None, streamer, threading.Event(), None, past, cached
        )

    model = OutOfMemoryModel()
    assert attempt(model, object(), 2) == ("full", 0)
    assert model.calls == [True, False]
    model = OutOfMemoryModel(always=True)
    with pytest.raises(MemoryError):  # without a cache there is nothing to give up
        attempt(model, None, 0)
    assert model.calls == [False]
    with pytest.raises(MemoryError):  # and the retry happens only once
        attempt(model, object(), 2)
    assert model.calls == [False, True, False]


def test_the_load_warms_up_with_a_timed_reply(
    model: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running(tmp_path_factory) as harness:
        loaded = harness.load(model, device="cpu", dtype="float32")
        stages = [e for e in harness.events if isinstance(e, LoadProgress)]
        assert stages[-1].stage == "warm-up" and "reply" in stages[-1].detail
        assert loaded.state.speed is not None and loaded.state.speed.decode_tokens_per_s > 0
