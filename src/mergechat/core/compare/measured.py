"""Each model's result of one prompt, with where its reply parts from the base model's reply
(by token when the vocabularies match, else by word)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from mergechat.core.compare.column import Column
from mergechat.core.compare.divergence import divergence
from mergechat.core.compare.events import ModelResult
from mergechat.core.streaming import ReplyStream


def measured_results(
    columns: Sequence[Column], base_index: int, *, by_token: bool
) -> tuple[ModelResult, ...]:
    """The results in column order; divergence only against the base's reply to this prompt,
    by token when ``by_token`` (every vocabulary the same), else by word."""
    results = [c.result() for c in columns]
    base = columns[base_index]
    if not base.reply or base.reply_error:
        return tuple(results)
    base_ids = token_ids(base.stream) if by_token else None
    for i, col in enumerate(columns):
        if i == base_index or col.finish is None or col.stats is None:
            continue  # no reply to this prompt (failed, or skipped by a stop)
        ids = token_ids(col.stream) if base_ids is not None else None
        found = divergence(base.reply, col.reply, base_ids=base_ids if ids else None, ids=ids)
        results[i] = replace(results[i], divergence=found)
    return tuple(results)


def token_ids(stream: ReplyStream | None) -> list[int] | None:
    """The reply's token ids, or None for a stream of text pieces."""
    # A local engine's stream (in this process or relayed from the engine process) holds the
    # model's token ids; a served model's holds text pieces, compared by word instead.
    return stream.token_ids() if stream is not None and stream.model_ids else None
