"""The templated chat prompt: the conversation as template turns, fitted to the context window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mergechat.core.api import ChatMessage
from mergechat.core.errors import BadInputError
from mergechat.core.settings.generation import GenerationSettings

#: Used (with a warning at load) when the tokenizer ships no chat template of its own.
CHATML_FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Prompt:
    """The tokenised conversation, ready for ``generate``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    tokens: int
    #: Oldest non-system messages left out to fit the context window.
    dropped: int
    #: ``settings.max_new_tokens``, lowered only when the last message alone nearly fills it.
    max_new_tokens: int


def conversation(
    messages: Sequence[ChatMessage], settings: GenerationSettings
) -> list[dict[str, str]]:
    """The messages as template dicts, with the settings' system prompt first when set."""
    turns = [{"role": m.role, "content": m.content} for m in messages]
    system = settings.system_prompt.strip()
    if system and not (turns and turns[0] == {"role": "system", "content": system}):
        turns.insert(0, {"role": "system", "content": system})
    return turns


def build_prompt(
    tokenizer: Any,
    turns: list[dict[str, str]],
    *,
    max_new_tokens: int,
    context_max: int,
    continue_last: bool = False,
    fallback_template: bool = False,
) -> Prompt:
    """Apply the chat template, dropping the oldest non-system turns until the reply fits."""
    if not turns:
        raise BadInputError("nothing to answer: the conversation is empty")
    if max_new_tokens < 1:
        raise BadInputError(f"max_new_tokens must be at least 1, not {max_new_tokens}")
    head = 0
    while head < len(turns) - 1 and turns[head]["role"] == "system":
        head += 1
    template = CHATML_FALLBACK_TEMPLATE if fallback_template else None

    def apply(kept: list[dict[str, str]]) -> Any:
        return tokenizer.apply_chat_template(
            kept,
            chat_template=template,
            add_generation_prompt=not continue_last,
            continue_final_message=continue_last,
            return_dict=True,
            return_tensors="pt",
        )

    def render(drop: int) -> Any:
        kept = turns[:head] + _without_leading_assistant(turns[head + drop :])
        try:
            return apply(kept)
        except Exception:
            # Some templates (Gemma's, for one) reject a system turn: fold it into the first
            # user turn instead of failing the reply.
            if not any(t["role"] == "system" for t in kept):
                raise
            return apply(_fold_system(kept))

    renders: dict[int, Any] = {}

    def fits(drop: int) -> bool:
        renders[drop] = render(drop)
        return int(renders[drop]["input_ids"].shape[-1]) + max_new_tokens <= context_max

    droppable = len(turns) - head - 1
    drop = 0
    if not fits(0) and droppable > 0:
        # Fewer kept turns never render longer, so the smallest drop that fits is a bisection;
        # when even dropping all but the last turn is too long, that is what is tried.
        low, high = 1, droppable
        while low < high:
            middle = (low + high) // 2
            if fits(middle):
                high = middle
            else:
                low = middle + 1
        drop = high
    encoded = renders[drop] if drop in renders else render(drop)
    tokens = int(encoded["input_ids"].shape[-1])
    if tokens >= context_max:
        raise BadInputError(
            f"the prompt is {tokens} tokens but the model's context holds {context_max}",
            hint="shorten the message or the system prompt",
        )
    kept_after = turns[head + drop :]
    dropped = drop + (len(kept_after) - len(_without_leading_assistant(kept_after)))
    return Prompt(
        input_ids=encoded["input_ids"],
        attention_mask=encoded["attention_mask"],
        tokens=tokens,
        dropped=dropped,
        max_new_tokens=min(max_new_tokens, context_max - tokens),
    )


def _fold_system(turns: list[dict[str, str]]) -> list[dict[str, str]]:
    """Move the system turns' text to the start of the first user turn."""
    system = "\n\n".join(t["content"] for t in turns if t["role"] == "system")
    rest = [dict(t) for t in turns if t["role"] != "system"]
    for turn in rest:
        if turn["role"] == "user":
            turn["content"] = f"{system}\n\n{turn['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]


def _without_leading_assistant(turns: list[dict[str, str]]) -> list[dict[str, str]]:
    # Many templates insist the history starts with a user turn; keep the final turn regardless.
    start = 0
    while start < len(turns) - 1 and turns[start]["role"] == "assistant":
        start += 1
    return turns[start:]
