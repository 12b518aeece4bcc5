"""A one-shot run's engine, event queue and output streams: load, stream one reply, print it.

`oneshot.run_oneshot` drives it and handles Ctrl+C and signals around it.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from mergechat.cli.oneshot_history import OneShotHistory
from mergechat.cli.output import warn
from mergechat.core.api import (
    ChatMessage,
    EngineClient,
    EngineEvent,
    EngineNotice,
    EventSink,
    LoadFailed,
    LoadProgress,
    LoadRequest,
    ModelLoaded,
    ModelState,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
)
from mergechat.core.errors import BadInputError, MergechatError
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.streaming import ReplyStream
from mergechat.core.termination import signals_deferred
from mergechat.core.visible import VisibleStream, escape_control

EngineFactory = Callable[[EventSink], EngineClient]

#: How often the reply stream is drained and written out.
DRAIN_INTERVAL_S = 0.05
#: How long to wait for the engine to confirm a cancel before giving up on the partial reply.
CANCEL_GRACE_S = 5.0

JSON_KEYS = (
    "reply",
    "device",
    "dtype",
    "prompt_tokens",
    "new_tokens",
    "ttft_s",
    "decode_tokens_per_s",
    "total_s",
)


@dataclass(frozen=True)
class OneShotRequest:
    """One prompt for one model: what to load, what to ask, and how to print the answer."""

    load: LoadRequest
    prompt: str
    settings: GenerationSettings
    #: Print one JSON object with the reply and its stats instead of streaming text.
    json_output: bool = False
    #: Save the prompt and the reply in the conversation history.
    record_history: bool = True
    #: Write the reply's bytes as they are even to a terminal (control characters are shown as
    #: ``\uXXXX`` on a terminal otherwise; a pipe or a file always gets them raw).
    raw: bool = False


class OneShotSession:
    """One engine, its event queue, and the output streams of a one-shot run."""

    def __init__(
        self,
        request: OneShotRequest,
        factory: EngineFactory,
        out: TextIO,
        err: TextIO,
        history: OneShotHistory,
    ):
        self.request = request
        self.out = out
        self.err = err
        self.history = history
        self.events: queue.Queue[EngineEvent] = queue.Queue()
        self.engine = factory(self.events.put)
        self.state: ModelState | None = None
        self._progress_shown = False
        self._written = ""
        # On a terminal, a reply's escape sequences (clipboard, title...) are shown, not run.
        self._visible = None if request.raw or not _isatty(out) else VisibleStream()

    # -- events ---------------------------------------------------------------------------------
    def _next(self, timeout: float) -> EngineEvent | None:
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(event, EngineNotice):
            self.clear_progress()
            warn(event.message, self.err, level="warning" if event.level != "info" else "note")
            return None
        return event

    def _show_progress(self, event: LoadProgress) -> None:
        # Only on a terminal: a redrawn line would be noise in a log file.
        if not self.err.isatty():
            return
        detail = f" {escape_control(event.detail)}" if event.detail else ""
        self.err.write(f"\r\x1b[Kloading: {event.stage} {event.fraction:.0%}{detail}"[:200])
        self.err.flush()
        self._progress_shown = True

    def clear_progress(self) -> None:
        """Erase the progress line, if one is shown."""
        if self._progress_shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self._progress_shown = False

    # -- load -----------------------------------------------------------------------------------
    def load(self) -> ModelState:
        """Start the engine, load the model, print its warnings; raise on failure."""
        self.engine.start()
        self.engine.load(self.request.load)
        while True:
            event = self._next(timeout=0.1)
            if isinstance(event, LoadProgress):
                self._show_progress(event)
            elif isinstance(event, ModelLoaded):
                self.clear_progress()
                for message in event.warnings:
                    warn(message, self.err)
                speed = event.state.speed
                if speed is not None and speed.say_faster and speed.faster_dtype is not None:
                    warn(
                        f"{speed.faster_dtype} would make chat turns about "
                        f"{speed.faster_by or 0:.1f}x faster on this machine (from this model's "
                        f"measured speed); --dtype {speed.faster_dtype} picks it",
                        self.err,
                        level="note",
                    )
                self.state = event.state
                return event.state
            elif isinstance(event, LoadFailed):
                self.clear_progress()
                # Bad input found only at load (a broken file) still exits 2.
                bad_input = event.exit_code == BadInputError.exit_code
                raise (BadInputError if bad_input else MergechatError)(event.message, event.hint)

    # -- generate -------------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        # A SIGHUP between the write and the bookkeeping would save less than was shown.
        with signals_deferred():
            if text and not self.request.json_output:
                self.out.write(self._visible.feed(text) if self._visible else text)
                self.out.flush()
            self._written += text

    def generate(self) -> tuple[ReplyFinished | None, bool]:
        """Stream the reply; return its final event (None if cut short) and whether interrupted."""
        messages = [ChatMessage("user", self.request.prompt)]
        # Committed before the engine is asked, so no failure or signal can lose the prompt.
        # The loaded model's path: for a server, its URL with the model id it chose.
        model = self.state.path if self.state is not None else self.request.load.path
        self.history.begin(model, self.request.prompt, self.request.settings, self.state)
        request_id = self.engine.generate(messages, self.request.settings)
        stream: ReplyStream | None = None
        interrupted = False
        deadline: float | None = None
        while True:
            try:
                if deadline is not None and time.monotonic() > deadline:
                    self.history.interrupted(self._written)
                    return None, True
                event = self._next(timeout=DRAIN_INTERVAL_S)
                if stream is not None:
                    self._write(stream.drain())
                    self.history.progress(self._written)
                if getattr(event, "request_id", request_id) != request_id:
                    continue  # not this reply's event
                if isinstance(event, ReplyStarted):
                    stream = event.stream
                    if event.dropped_messages:
                        n = event.dropped_messages
                        warn(f"{n} message(s) dropped to fit the context window", self.err)
                elif isinstance(event, ReplyFinished):
                    self._finish_text(stream, event.text)
                    self._record_finished(event)
                    return event, interrupted
                elif isinstance(event, ReplyFailed):
                    self._finish_text(stream, event.partial_text)
                    self.history.failed(event.partial_text, event.message)
                    self.end_line()
                    raise MergechatError(event.message, event.hint)
            except KeyboardInterrupt:
                if interrupted:  # a second Ctrl+C: stop waiting for the engine
                    return None, True
                interrupted = True
                self.engine.cancel()
                deadline = time.monotonic() + CANCEL_GRACE_S

    def _record_finished(self, event: ReplyFinished) -> None:
        model = self.state.path if self.state is not None else self.request.load.path
        settings = self.request.settings
        self.history.finished(event.text, event.finish, event.stats, settings, model)

    def interrupted_by_signal(self) -> None:
        """Save what the reply has so far (called from the SIGHUP/SIGTERM handler)."""
        self.history.interrupted(self._written)
        self.engine.cancel()

    def _finish_text(self, stream: ReplyStream | None, final: str) -> None:
        if stream is not None:
            self._write(stream.drain())
        # The final text is authoritative; write whatever the stream did not deliver.
        if final.startswith(self._written):
            self._write(final[len(self._written) :])

    def end_line(self) -> None:
        """End the streamed text with a newline if it has none (never in JSON mode)."""
        if self.request.json_output:
            return
        held = self._visible.flush() if self._visible else ""
        if self._written and not self._written.endswith("\n"):
            held += "\n"
        if held:
            self.out.write(held)
            self.out.flush()

    def print_result(self, finished: ReplyFinished | None) -> None:
        """End the streamed text with a newline, or print the JSON object."""
        if not self.request.json_output:
            self.end_line()
            return
        result: dict[str, object] = dict.fromkeys(JSON_KEYS)
        result["reply"] = finished.text if finished is not None else self._written
        if finished is not None:
            stats = finished.stats
            result.update(
                # A server that does not say what it runs on gives "" here: null, never a guess.
                device=stats.device or None,
                dtype=stats.dtype or None,
                prompt_tokens=stats.prompt_tokens,
                new_tokens=stats.new_tokens,
                ttft_s=round(stats.ttft_s, 4),
                decode_tokens_per_s=round(stats.decode_tokens_per_s, 2),
                total_s=round(stats.total_s, 4),
            )
        line = json.dumps(result, ensure_ascii=False)
        # JSON escapes C0 controls itself; on a terminal the C1 ones become \uXXXX escapes too.
        self.out.write((escape_control(line) if self._visible else line) + "\n")
        self.out.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):  # a closed or odd stream: not a terminal
        return False
