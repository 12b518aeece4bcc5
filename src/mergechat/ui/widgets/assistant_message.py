"""`AssistantMessage`: one reply, streamed as Markdown in ~100 ms batches, with a stats footer."""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.await_complete import AwaitComplete
from textual.containers import Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Static

from mergechat.core.api import FinishReason, ReplyStats
from mergechat.core.streaming import ReplyStream
from mergechat.core.visible import escape_control
from mergechat.ui.widgets.reply_body import ReplyBody

#: Seconds between drains of the token stream. Each render holds the GIL the engine thread needs
#: between torch ops: draining less often leaves decode more of it, and 100 ms still reads as a
#: smooth stream (BENCHMARKS.md).
PUMP_INTERVAL = 0.1


def format_footer(stats: ReplyStats, finish: FinishReason) -> str:
    """The quiet line under a finished reply: tokens, speed, TTFT, dtype, device, how it ended."""
    parts = [
        f"{stats.new_tokens} tokens",
        f"{stats.decode_tokens_per_s:.1f} tok/s",
        f"TTFT {stats.ttft_s:.2f} s",
        stats.dtype,
        stats.device,
    ]
    if finish == "stopped":
        parts.append("stopped")
    elif finish == "length":
        parts.append("hit max_new_tokens")
    return " · ".join(part for part in parts if part)  # a server may not report dtype/device


class AssistantMessage(Vertical):
    """A reply: Markdown body plus a footer; `begin` streams, `finish`/`fail` end it."""

    class Progress(Message):
        """Posted after each batch: tokens so far and the decode speed (None before 2 tokens)."""

        def __init__(self, tokens: int, tokens_per_s: float | None) -> None:
            super().__init__()
            self.tokens = tokens
            self.tokens_per_s = tokens_per_s

    def __init__(self, text: str = "", *, footer: str = "") -> None:
        super().__init__(classes="assistant-message")
        self._initial_text = text
        self._initial_footer = footer
        self._prefix = ""
        self._stream: ReplyStream | None = None
        self._timer: Timer | None = None
        self._first_token_at: float | None = None
        self._first_batch = 0
        self._tokens = 0

    def compose(self) -> ComposeResult:
        yield ReplyBody(self._initial_text, classes="reply-body")
        footer = escape_control(self._initial_footer)
        yield Static(footer, classes="reply-footer", markup=False)

    @property
    def body(self) -> ReplyBody:
        """The widget holding the reply text."""
        return self.query_one(ReplyBody)

    @property
    def footer_text(self) -> str:
        """The footer line as shown (control characters escaped)."""
        return str(self.query_one(".reply-footer", Static).content)

    @property
    def streaming(self) -> bool:
        """True between `begin` and `finish`/`fail`."""
        return self._stream is not None

    def set_footer(self, text: str) -> None:
        """Replace the footer line (an error message may quote model text: escaped)."""
        self.query_one(".reply-footer", Static).update(escape_control(text))

    def begin(self, stream: ReplyStream) -> None:
        """Start draining ``stream`` every `PUMP_INTERVAL`; text is appended to what is shown."""
        self._prefix = self.body.source
        self._stream = stream
        self._first_token_at = None
        self._tokens = 0
        self.set_footer("")
        self._timer = self.set_interval(PUMP_INTERVAL, self._pump)

    def _pump(self) -> None:
        stream = self._stream
        if stream is None:
            return
        text = stream.drain()
        tokens = stream.token_count
        if tokens == self._tokens:
            return
        now = time.monotonic()
        if self._first_token_at is None:
            self._first_token_at = now
            # The first batch may hold several tokens; the rate counts the tokens after it.
            self._first_batch = tokens
        self._tokens = tokens
        if text:
            self.body.append(text)
        elapsed = now - self._first_token_at
        rate = (tokens - self._first_batch) / elapsed if elapsed > 0 else None
        self.post_message(self.Progress(tokens, rate))

    def _stop_streaming(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._stream = None

    def finish(self, text: str, footer: str) -> AwaitComplete:
        """End the stream and render the whole reply once (``text`` is what this request made).

        Runs at once; await the result to wait for the render.
        """
        return self._end(self._prefix + text, footer)

    def fail(self, message: str, partial_text: str = "") -> AwaitComplete:
        """End the stream with a failure: keep any partial text, footer ``failed: message``."""
        return self._end(self._prefix + partial_text, f"failed: {message}")

    def _end(self, text: str, footer: str) -> AwaitComplete:
        self._stop_streaming()
        self.set_footer(footer)
        return self.body.set_text(text)
