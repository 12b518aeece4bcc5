"""One reply on the engine thread: chat prompt, context fit, streamed ids, cancel, stats."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteriaList

from mergechat.core.api import (
    ChatMessage,
    EngineEvent,
    FinishReason,
    GenerationSettings,
    ModelState,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    ReplyStats,
)
from mergechat.core.error_translation import translate
from mergechat.core.errors import BadInputError
from mergechat.core.generation_hooks import (
    CancelCriteria,
    IdStreamer,
    PrefillCancelled,
    PrefillGuard,
)
from mergechat.core.loader import LoadedModel
from mergechat.core.streaming import ReplyStream

#: Used (with a warning at load) when the tokenizer ships no chat template of its own.
CHATML_FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

Emit = Callable[[EngineEvent], None]


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


def generation_config(
    model: Any, tokenizer: Any, settings: GenerationSettings, max_new_tokens: int
) -> Any:
    """The model's generation_config.json defaults with the user's overrides applied."""
    config = copy.deepcopy(model.generation_config)
    config.max_new_tokens = max_new_tokens
    config.max_length = None
    # A min_new_tokens default above the requested maximum only earns a warning; cap it.
    if config.min_new_tokens is not None:
        config.min_new_tokens = min(config.min_new_tokens, max_new_tokens)
    config.min_length = 0
    if settings.temperature is not None:
        config.do_sample = settings.temperature > 0
        if config.do_sample:
            config.temperature = settings.temperature
    if settings.top_p is not None:
        config.top_p = settings.top_p
    if settings.top_k is not None:
        config.top_k = settings.top_k
    if settings.repetition_penalty is not None:
        config.repetition_penalty = settings.repetition_penalty
    if not config.do_sample:
        # Sampling knobs mean nothing for greedy decoding; unset them so no warning is raised.
        config.do_sample = False
        config.temperature = config.top_p = config.top_k = None
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
        if config.pad_token_id is None:
            config.pad_token_id = _ids(config.eos_token_id)[0] if config.eos_token_id else 0
    return config


def reply(
    loaded: LoadedModel,
    request_id: int,
    messages: Sequence[ChatMessage],
    settings: GenerationSettings,
    *,
    continue_last: bool,
    cancel: threading.Event,
    requested_at: float,
    emit: Emit,
) -> None:
    """Generate one reply, emitting ReplyStarted then ReplyFinished or ReplyFailed."""
    model, tokenizer, state = loaded.model, loaded.tokenizer, loaded.state
    prompt = build_prompt(
        tokenizer,
        conversation(messages, settings),
        max_new_tokens=settings.max_new_tokens,
        context_max=state.context_max,
        continue_last=continue_last,
        fallback_template=state.fallback_template,
    )
    config = generation_config(model, tokenizer, settings, prompt.max_new_tokens)
    if state.fallback_template:
        # The fallback template ends turns with <|im_end|>; stop there too when it is a token.
        end_id = tokenizer.get_vocab().get("<|im_end|>")
        if end_id is not None and end_id not in _ids(config.eos_token_id):
            config.eos_token_id = [*_ids(config.eos_token_id), end_id]
    eos_ids = set(_ids(config.eos_token_id))
    stream = ReplyStream(lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True)))
    emit(ReplyStarted(request_id, stream, prompt.tokens, state.context_max, prompt.dropped))
    guard = PrefillGuard(model, cancel)
    streamer = IdStreamer(stream, eos_ids, on_first_token=guard.remove)
    failure: BaseException | None = None
    try:
        _generate(model, prompt, config, streamer, cancel, settings.seed)
    except PrefillCancelled:
        pass  # stopped before the first token: finishes below as "stopped", with no text
    except BaseException as exc:  # even a SystemExit from model code ends only this reply
        failure = exc
    finally:
        # Before any event goes out: whoever sees the reply end sees no hook and a closed stream.
        guard.remove()
        stream.close()
    if failure is not None:
        error = translate(failure, dtype=state.dtype, device=state.device)
        emit(ReplyFailed(request_id, error.message, _decode(tokenizer, streamer.ids), error.hint))
        return
    new = streamer.generated
    finish: FinishReason
    if streamer.saw_eos:
        finish = "complete"
    elif cancel.is_set():
        finish = "stopped"
    elif new >= prompt.max_new_tokens:
        finish = "length"
    else:
        finish = "complete"
    stats = _stats(streamer, prompt.tokens, requested_at, state)
    emit(ReplyFinished(request_id, _decode(tokenizer, streamer.ids), stats, finish))


def _generate(
    model: Any,
    prompt: Prompt,
    config: Any,
    streamer: IdStreamer,
    cancel: threading.Event,
    seed: int | None,
) -> None:
    if seed is not None:
        torch.manual_seed(seed)
    device = model.device
    with torch.inference_mode():
        model.generate(
            input_ids=prompt.input_ids.to(device),
            attention_mask=prompt.attention_mask.to(device),
            generation_config=config,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([CancelCriteria(cancel, device)]),
        )


def _stats(
    streamer: IdStreamer, prompt_tokens: int, requested_at: float, state: ModelState
) -> ReplyStats:
    finished_at = streamer.last_at or time.perf_counter()
    first_at = streamer.first_at or finished_at
    new = streamer.generated
    decode_s = finished_at - first_at
    return ReplyStats(
        prompt_tokens=prompt_tokens,
        new_tokens=new,
        # No token (stopped during the prefill): no time to a first token, as for a skipped one.
        ttft_s=first_at - requested_at if new else 0.0,
        total_s=finished_at - requested_at,
        decode_tokens_per_s=(new - 1) / decode_s if new > 1 and decode_s > 0 else 0.0,
        context_used=prompt_tokens + new,
        context_max=state.context_max,
        dtype=state.dtype,
        device=state.device,
    )


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return str(tokenizer.decode(ids, skip_special_tokens=True)) if ids else ""


def _ids(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)
