"""One streamed reply from ``/v1/chat/completions`` (through the `openai` client), turned into
the engine's events: ReplyStarted with a text stream, then ReplyFinished or ReplyFailed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import openai

from mergechat.core.api import (
    ChatMessage,
    EventSink,
    FinishReason,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    ReplyStats,
)
from mergechat.core.dtypes import DType
from mergechat.core.errors import MergechatError
from mergechat.core.model.target import RemoteTarget
from mergechat.core.remote.faults import server_text, status_error, transport_error
from mergechat.core.remote.server_info import ServerInfo
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.streaming import ReplyStream


class TextStream(ReplyStream):
    """A `ReplyStream` of text pieces: each "token id" is the index of a piece the server sent."""

    model_ids = False

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._pieces_lock = threading.Lock()
        super().__init__(self._join)

    def _join(self, ids: Sequence[int]) -> str:
        with self._pieces_lock:
            return "".join(self._pieces[i] for i in ids)

    def push_text(self, text: str) -> None:
        """Append one piece of the reply (called on the client's thread)."""
        with self._pieces_lock:
            self._pieces.append(text)
            index = len(self._pieces) - 1
        self.push([index])


@dataclass(frozen=True)
class ReplyJob:
    """What one reply needs: the server, its model, the request and how to know it is stopped."""

    request_id: int
    target: RemoteTarget
    info: ServerInfo
    messages: tuple[ChatMessage, ...]
    settings: GenerationSettings
    continue_last: bool
    cancelled: Callable[[], bool]
    #: Told of the open stream (and of None when it ends) so a cancel can close it.
    on_open: Callable[[Any], None]


def request_arguments(job: ReplyJob) -> dict[str, Any]:
    """The arguments of ``chat.completions.create`` for ``job`` (only the settings given)."""
    settings = job.settings
    messages = [{"role": m.role, "content": m.content} for m in job.messages]
    if settings.system_prompt and (not messages or messages[0]["role"] != "system"):
        messages.insert(0, {"role": "system", "content": settings.system_prompt})
    arguments: dict[str, Any] = {
        "model": job.info.model,
        "messages": messages,
        "stream": True,
        "max_tokens": settings.max_new_tokens,
        "stream_options": {"include_usage": True},
    }
    for name in ("temperature", "top_p", "seed"):
        value = getattr(settings, name)
        if value is not None:
            arguments[name] = value
    extra: dict[str, Any] = {}
    if settings.top_k:
        extra["top_k"] = settings.top_k
    if settings.repetition_penalty is not None:
        extra["repetition_penalty"] = settings.repetition_penalty
    if job.continue_last and job.info.engine == "vLLM":
        # vLLM's documented way to extend the last assistant message instead of answering it.
        extra.update(continue_final_message=True, add_generation_prompt=False)
    if extra:
        arguments["extra_body"] = extra
    return arguments


def api_error(target: RemoteTarget, error: Exception) -> MergechatError:
    """The one-line error for a failure of the `openai` client (or of the stream under it)."""
    if isinstance(error, openai.APIStatusError):
        body = error.response.text if error.response is not None else ""
        return status_error(target, "POST /chat/completions", error.status_code, body)
    if isinstance(error, openai.APITimeoutError):
        return transport_error(target, TimeoutError())
    cause = error.__cause__ or error.__context__ or error
    if isinstance(error, openai.APIConnectionError):
        return transport_error(target, cause)
    if "Timeout" in type(error).__name__:
        return transport_error(target, TimeoutError())
    return MergechatError(
        f"the connection to {target.host_port} broke during the reply ({server_text(error)})"
    )


def run_reply(client: openai.OpenAI, job: ReplyJob, sink: EventSink) -> None:
    """Stream ``job``'s reply, reporting to ``sink``; never raises."""
    begin = time.perf_counter()
    context_max = job.info.context_max or 0
    try:
        stream = client.chat.completions.create(**request_arguments(job))
    except Exception as error:
        refused = api_error(job.target, error)
        sink(ReplyFailed(job.request_id, refused.message, hint=refused.hint))
        return
    job.on_open(stream)
    text = TextStream()
    sink(ReplyStarted(job.request_id, text, 0, context_max))
    parts: list[str] = []
    first: float | None = None
    finish: str | None = None
    usage: Any = None
    failure: MergechatError | None = None
    try:
        for chunk in stream:
            if job.cancelled():
                break
            usage = getattr(chunk, "usage", None) or usage
            for choice in chunk.choices[:1]:
                piece = choice.delta.content if choice.delta is not None else None
                if piece:
                    first = first or time.perf_counter()
                    parts.append(piece)
                    text.push_text(piece)
                finish = choice.finish_reason or finish
    except Exception as error:  # a broken connection, a read timeout, a stream closed by cancel
        if not job.cancelled():
            failure = api_error(job.target, error)
    finally:
        job.on_open(None)
        stream.close()
        text.close()
    reply = "".join(parts)
    if job.cancelled():
        finish = "stopped"
    elif failure is None and finish is None:
        failure = MergechatError(f"{job.target.host_port} ended the reply without finishing it")
    if failure is not None:
        sink(ReplyFailed(job.request_id, failure.message, reply, failure.hint))
        return
    end = time.perf_counter()
    ended: FinishReason = (
        "stopped" if finish == "stopped" else ("length" if finish == "length" else "complete")
    )
    sink(
        ReplyFinished(
            job.request_id, reply, _stats(job, usage, len(parts), begin, first, end), ended
        )
    )


def _stats(
    job: ReplyJob, usage: Any, pieces: int, begin: float, first: float | None, end: float
) -> ReplyStats:
    prompt = getattr(usage, "prompt_tokens", None) or 0
    new = getattr(usage, "completion_tokens", None) or pieces
    ttft = (first or end) - begin
    decode = (new - 1) / (end - (first or end)) if new > 1 and first and end > first else 0.0
    return ReplyStats(
        prompt_tokens=prompt,
        new_tokens=new,
        ttft_s=ttft,
        total_s=end - begin,
        decode_tokens_per_s=decode,
        context_used=prompt + new,
        context_max=job.info.context_max or 0,
        # What the server reported, or empty: never the precision of some other run.
        dtype=cast(DType, job.info.dtype or ""),
        device=job.info.device or "",
    )
