"""Teacher-forced agreement: how often a model's top-1 next token is the reference reply's token,
over the whole reply at once (one forward pass), so a merge can be measured against its parents."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mergechat.core.api import ChatMessage
from mergechat.core.engine.chat_prompt import build_prompt, conversation
from mergechat.core.engine.loader import LoadedModel
from mergechat.core.settings.generation import GenerationSettings


@dataclass(frozen=True)
class Agreement:
    """Top-1 agreement over ``tokens`` reply tokens; ``first_miss``: the first one that differs."""

    matched: int
    tokens: int
    first_miss: int | None

    @property
    def score(self) -> float | None:
        """``matched / tokens`` (None for an empty reply)."""
        return self.matched / self.tokens if self.tokens else None


def top1_agreement(model: Any, prompt_ids: torch.Tensor, reply_ids: Sequence[int]) -> Agreement:
    """Feed prompt + reply once and count where the model's argmax equals the next reply token.

    ``prompt_ids`` is ``[1, P]`` (at least one token); ``reply_ids`` are the reference tokens.
    """
    if not reply_ids:
        return Agreement(0, 0, None)
    device = next(model.parameters()).device
    reply = torch.tensor([list(reply_ids)], dtype=prompt_ids.dtype)
    input_ids = torch.cat([prompt_ids.to("cpu"), reply], dim=1).to(device)
    start = int(prompt_ids.shape[-1]) - 1
    with torch.inference_mode():
        logits = model(input_ids=input_ids, use_cache=False).logits
        predicted = logits[0, start : start + len(reply_ids)].argmax(dim=-1).to("cpu")
    hits = predicted == reply[0]
    misses = (~hits).nonzero()
    first_miss = int(misses[0, 0]) if misses.numel() else None
    return Agreement(int(hits.sum()), len(reply_ids), first_miss)


def score_reply(
    loaded: LoadedModel,
    messages: Sequence[ChatMessage],
    settings: GenerationSettings,
    reference: str,
    reference_ids: Sequence[int] | None = None,
) -> Agreement:
    """The agreement of ``loaded`` with ``reference`` as the answer to ``messages``.

    The reference text is tokenised with this model's own tokenizer (unless ``reference_ids``
    from the same tokenizer are given), so models whose tokenizers differ are still scored; the
    reply is cut to what the context window holds.
    """
    tokenizer, state = loaded.tokenizer, loaded.state
    prompt = build_prompt(
        tokenizer,
        conversation(messages, settings),
        max_new_tokens=1,
        context_max=state.context_max,
        fallback_template=state.fallback_template,
    )
    if reference_ids is not None:  # the same tokenizer made them: exact, no re-encoding
        reply_ids = list(reference_ids)
    else:
        reply_ids = list(tokenizer.encode(reference, add_special_tokens=False))
    room = max(0, state.context_max - prompt.tokens)
    return top1_agreement(loaded.model, prompt.input_ids, reply_ids[:room])
