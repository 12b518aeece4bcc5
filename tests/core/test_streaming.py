"""Streaming: ids pushed on the engine thread, text drained by the consumer, equal to the final."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_harness import Harness, ask, running_chatty

from mergechat.core.api import ReplyFinished, ReplyStarted
from mergechat.core.engine.hooks import IdStreamer
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.streaming import ReplyStream


@pytest.fixture(scope="module")
def chatty(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_chatty(tmp_path_factory, tiny_model_dir, dtype="bfloat16") as harness:
        yield harness


def _decoder(tokenizer: Any) -> Any:
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)


def test_drain_in_small_batches_equals_one_decode(tokenizer: Any) -> None:
    text = "Unicode: café, naïve, 東京, 🙂. The capital of France is Paris."
    ids = tokenizer(text)["input_ids"]
    stream = ReplyStream(_decoder(tokenizer))
    pieces = []
    for i in range(0, len(ids), 2):
        stream.push(ids[i : i + 2])
        pieces.append(stream.drain())
    stream.close()
    pieces.append(stream.drain())
    assert "".join(pieces) == text == stream.text
    assert stream.token_count == len(ids)
    assert all("\ufffd" not in piece for piece in pieces)


def test_incomplete_character_is_held_back_until_it_completes(tokenizer: Any) -> None:
    ids = tokenizer("🙂")["input_ids"]
    assert len(ids) > 1  # byte-level BPE splits the emoji into byte tokens
    stream = ReplyStream(_decoder(tokenizer))
    stream.push(ids[:1])
    assert stream.drain() == ""
    stream.push(ids[1:])
    assert stream.drain() == "🙂"
    assert not stream.closed
    stream.close()
    assert stream.closed and stream.drain() == ""


def test_id_streamer_skips_prompt_drops_eos_and_times_tokens() -> None:
    stream = ReplyStream(lambda ids: ",".join(map(str, ids)))
    streamer = IdStreamer(stream, eos_ids={2})
    streamer.put(torch.tensor([[1, 5, 6, 7]]))  # the prompt, as generate() sends it first
    assert stream.token_count == 0 and streamer.first_at is None
    streamer.put(torch.tensor([10]))
    first = streamer.first_at
    time.sleep(0.01)
    streamer.put(torch.tensor([11]))
    streamer.put(torch.tensor([2]))
    streamer.end()
    assert streamer.ids == [10, 11] and stream.token_count == 2
    assert streamer.generated == 3 and streamer.saw_eos
    assert first is not None and streamer.last_at is not None
    assert streamer.last_at - first >= 0.01


def test_engine_stream_drained_while_generating_equals_final_text(chatty: Harness) -> None:
    request_id = chatty.engine.generate(ask("Hello there"), GenerationSettings(max_new_tokens=48))
    started = chatty.wait_for(ReplyStarted)
    assert started.request_id == request_id and started.prompt_tokens > 0
    drained: list[str] = []
    done = threading.Event()

    def consume() -> None:
        # The consumer side of a UI: drain on its own schedule until the engine closes it.
        while not started.stream.closed:
            drained.append(started.stream.drain())
            time.sleep(0.002)
        drained.append(started.stream.drain())
        done.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    finished = chatty.wait_for(ReplyFinished)
    consumer.join(30)
    assert done.is_set()
    assert finished.finish == "length" and finished.stats.new_tokens == 48
    assert "".join(drained) == finished.text == started.stream.text
    assert sum(1 for piece in drained if piece) > 1, "text should arrive in several batches"
    assert started.stream.token_count == 48


def test_stats_are_consistent(chatty: Harness) -> None:
    started, finished = chatty.reply(ask("Count: 1 2 3"), GenerationSettings(max_new_tokens=16))
    stats = finished.stats
    assert stats.prompt_tokens == started.prompt_tokens
    assert stats.new_tokens == 16
    assert stats.context_used == stats.prompt_tokens + 16
    assert stats.context_max == started.context_max == 512
    assert 0 < stats.ttft_s <= stats.total_s
    decode_s = stats.total_s - stats.ttft_s
    assert stats.decode_tokens_per_s == pytest.approx(15 / decode_s, rel=1e-6)
    assert stats.dtype == "bfloat16" and stats.device == "cpu"
