"""One reply on the engine thread: generation settings, the kept KV cache, streamed ids, cancel,
stats."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import StoppingCriteriaList

from mergechat.core.api import (
    ChatMessage,
    EngineEvent,
    FinishReason,
    ModelState,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    ReplyStats,
)
from mergechat.core.engine.chat_prompt import Prompt, build_prompt, conversation
from mergechat.core.engine.error_translation import is_out_of_memory, translate
from mergechat.core.engine.hooks import (
    CancelCriteria,
    IdStreamer,
    PrefillCancelled,
    PrefillGuard,
)
from mergechat.core.engine.loader import LoadedModel
from mergechat.core.engine.prompt_cache import PromptCache
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.streaming import ReplyStream

Emit = Callable[[EngineEvent], None]


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
    cache: PromptCache | None = None,
) -> None:
    """Generate one reply, emitting ReplyStarted then ReplyFinished or ReplyFailed.

    ``cache`` holds the previous turn's KV cache: only the tokens after the common prefix are
    prefilled, and the cache is kept for the next turn when this reply ends well.
    """
    model, tokenizer, state = loaded.model, loaded.tokenizer, loaded.state
    cache = cache or PromptCache(enabled=False)
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
    # A model asking for its own cache kind (static, hybrid, ...) gets it afresh every turn.
    reuse = cache.enabled and config.cache_implementation is None
    past, cached = None, 0
    with torch.inference_mode():  # the cache's tensors were made in inference mode: crop there
        if reuse:
            past, cached = cache.take(prompt.input_ids[0].tolist(), model.device)
        cache.drop()
    stream = ReplyStream(lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True)))
    emit(ReplyStarted(request_id, stream, prompt.tokens, state.context_max, prompt.dropped))
    guard = PrefillGuard(model, cancel)
    streamer = IdStreamer(stream, eos_ids, on_first_token=guard.remove)
    failure: BaseException | None = None
    out: Any = None
    try:
        out, cached = _generate_once_more_on_oom(
            model, prompt, config, streamer, cancel, settings.seed, past, cached
        )
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
    if reuse and out is not None and not cancel.is_set():
        # In half precision the keys and values a one-token decode step writes are rounded
        # differently from a batched prefill of the same tokens, and greedy replies drift
        # from a full prefill's within a few turns: keep only the prompt's part there.
        upto = None if state.dtype == "float32" else prompt.tokens
        with torch.inference_mode():
            cache.keep(out.cache, out.sequences[0].tolist(), upto)
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
    stats = _stats(streamer, prompt.tokens, requested_at, state, cached)
    emit(ReplyFinished(request_id, _decode(tokenizer, streamer.ids), stats, finish))


def _generate_once_more_on_oom(
    model: Any,
    prompt: Prompt,
    config: Any,
    streamer: IdStreamer,
    cancel: threading.Event,
    seed: int | None,
    past: Any,
    cached: int,
) -> tuple[Any, int]:
    """``generate`` with the kept cache; out of memory before the first token with a cache,
    once more without it (the cache's memory freed). Returns the output and the reused count."""
    device = model.device

    def generate(cache: Any) -> Any:
        if seed is not None:
            torch.manual_seed(seed)
        extra: dict[str, Any] = {} if cache is None else {"cache": cache}
        with torch.inference_mode():
            return model.generate(
                input_ids=prompt.input_ids.to(device),
                attention_mask=prompt.attention_mask.to(device),
                generation_config=config,
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([CancelCriteria(cancel, device)]),
                return_dict_in_generate=True,
                **extra,
            )

    try:
        return generate(past), cached
    except Exception as exc:
        if past is None or streamer.generated or not is_out_of_memory(exc):
            raise
    del past
    streamer.restart()
    if getattr(device, "type", "cpu") == "cuda":
        torch.cuda.empty_cache()
    return generate(None), 0


def _stats(
    streamer: IdStreamer, prompt_tokens: int, requested_at: float, state: ModelState, cached: int
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
        cached_tokens=cached,
    )


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return str(tokenizer.decode(ids, skip_special_tokens=True)) if ids else ""


def _ids(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)
