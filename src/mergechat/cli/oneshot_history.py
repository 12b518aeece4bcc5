"""`OneShotHistory`: saves a one-shot exchange in the history store; failures are one warning."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from mergechat.core.api import FinishReason, ModelState, ReplyStats
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.records import HistoryUnavailable, MessageState

if TYPE_CHECKING:
    from mergechat.core.store.recorder import ReplyRecorder
    from mergechat.core.store.store import HistoryStore

#: Engine finish reasons as stored message states ("length" is a complete reply at the cap).
_STATES: dict[str, MessageState] = {"complete": "complete", "length": "complete"}


class OneShotHistory:
    """The prompt and its reply as a new conversation; with no store every method does nothing.

    The prompt is committed before generation starts, the streaming reply at most once per
    ``interval_s`` and at the end. The first failure prints ``mergechat: warning: history is
    off: ...`` on ``err`` and turns history off: the answer itself never fails because of it.
    """

    def __init__(
        self, store: HistoryStore | None, err: TextIO | None = None, *, interval_s: float = 1.0
    ) -> None:
        """Record into ``store`` (None: history off); warnings go to ``err`` (stderr)."""
        self.store = store
        self.err = err
        self.interval_s = interval_s
        self.conversation_id: int | None = None
        self._recorder: ReplyRecorder | None = None

    @classmethod
    def open(cls, enabled: bool, err: TextIO | None = None) -> OneShotHistory:
        """Open the default store when ``enabled``; a store that cannot be used is a warning."""
        history = cls(None, err)
        if enabled:
            from mergechat.core.store.store import HistoryStore

            try:
                history.store = HistoryStore.open()
            except HistoryUnavailable as exc:
                history._turn_off(exc)
        return history

    def begin(
        self,
        model_path: str | os.PathLike[str],
        prompt: str,
        settings: GenerationSettings | None = None,
        state: ModelState | None = None,
    ) -> None:
        """Save the prompt (committed now) and an empty reply in state ``streaming`` that says
        what produces it (``settings``, the model and its device and precision in ``state``)."""
        from mergechat.core.store.recorder import ReplyRecorder

        store = self.store
        if store is None:
            return

        def write() -> None:
            self.conversation_id = store.new_conversation(model_path)
            store.add_message(self.conversation_id, "user", prompt)
            reply = store.add_message(self.conversation_id, "assistant", "", "streaming")
            store.record_producer(
                reply,
                settings=settings,
                model_path=state.path if state is not None else model_path,
                device=state.device if state is not None else None,
                dtype=state.dtype if state is not None else None,
            )
            self._recorder = ReplyRecorder(store, reply, self.interval_s)

        self._guard(write)

    def progress(self, text: str) -> None:
        """The reply's text so far; written at most once per ``interval_s``."""
        recorder = self._recorder
        if recorder is not None:
            self._guard(lambda: recorder.update(text))

    def finished(
        self,
        text: str,
        finish: FinishReason,
        stats: ReplyStats,
        settings: GenerationSettings,
        model_path: str | os.PathLike[str],
    ) -> None:
        """Save the final reply with what produced it."""
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            state = _STATES.get(finish, "stopped")
            self._guard(
                lambda: recorder.finish(
                    text, state, stats, settings, model_path=model_path, finish_reason=finish
                )
            )

    def failed(self, partial: str, message: str) -> None:
        """Save a failed reply: its partial text and the error."""
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            self._guard(lambda: recorder.finish(partial, "failed", error=message))

    def interrupted(self, text: str | None = None) -> None:
        """Save the reply as ``stopped`` (Ctrl+C not confirmed, SIGHUP, SIGTERM): ``text``, or
        the latest text given to `progress`."""
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            final = recorder.pending_text if text is None else text
            self._guard(lambda: recorder.finish(final, "stopped", finish_reason="stopped"))

    def close(self) -> None:
        """Save an unfinished reply as stopped, then close the store. Safe to call twice."""
        self.interrupted()
        store, self.store = self.store, None
        if store is not None:
            store.close()

    # -- plumbing ---------------------------------------------------------------------------------
    def _guard(self, write: Callable[[], object]) -> None:
        try:
            write()
        except HistoryUnavailable as exc:
            self._turn_off(exc)

    def _turn_off(self, exc: HistoryUnavailable) -> None:
        store, self.store, self._recorder = self.store, None, None
        if store is not None:
            store.close()
        stream = self.err or sys.stderr
        stream.write(f"mergechat: warning: history is off: {' '.join(str(exc).split())}\n")
        stream.flush()
