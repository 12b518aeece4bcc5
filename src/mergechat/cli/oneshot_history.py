"""`OneShotHistory`: one-shot's side of the history: its one exchange, through `ChatRecorder`."""

from __future__ import annotations

import os
from typing import TextIO

from mergechat.cli.output import warn
from mergechat.core.api import FinishReason, ModelState, ReplyStats
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.recorder import ChatRecorder
from mergechat.core.store.records import HistoryUnavailable
from mergechat.core.store.reply_writer import ReplyHandle


class OneShotHistory:
    """The prompt and its reply as a new conversation; history trouble is one warning on ``err``.

    The prompt is committed before generation starts, the streaming reply at most once per
    second and at the end; the answer itself never fails because of the history. It is never
    noted as the app's open conversation, so the app's next start is unaffected.
    """

    def __init__(self, err: TextIO | None = None) -> None:
        """History off until `open`; warnings go to ``err`` (stderr)."""
        self.err = err
        self.recorder = ChatRecorder(None, self._turned_off, remember_open=False)
        self._reply: ReplyHandle | None = None

    @classmethod
    def open(cls, enabled: bool, err: TextIO | None = None) -> OneShotHistory:
        """Open the default store when ``enabled``; a store that cannot be used is a warning."""
        history = cls(err)
        if enabled:
            history.recorder.open_store()
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
        self.recorder.set_model(model_path)
        self.recorder.user_message(prompt)
        self._reply = self.recorder.reply_started("new", settings, model=state)

    def progress(self, text: str) -> None:
        """The reply's text so far; written at most once per second."""
        self.recorder.reply_progress(self._reply, text)

    def finished(
        self,
        text: str,
        finish: FinishReason,
        stats: ReplyStats,
        settings: GenerationSettings,
        model_path: str | os.PathLike[str],
    ) -> None:
        """Save the final reply with what produced it."""
        self.recorder.reply_finished(self._reply, text, finish, stats, settings, model_path)

    def failed(self, partial: str, message: str) -> None:
        """Save a failed reply: its partial text and the error."""
        self.recorder.reply_failed(self._reply, partial, message)

    def interrupted(self, text: str | None = None) -> None:
        """Save the reply as ``stopped`` (Ctrl+C not confirmed, SIGHUP, SIGTERM): ``text``, or
        the latest text given to `progress`."""
        self.recorder.reply_interrupted(self._reply, text)

    def close(self) -> None:
        """Save an unfinished reply as stopped, then close the store. Safe to call twice."""
        self.recorder.close()

    def _turned_off(self, exc: HistoryUnavailable) -> None:
        warn(f"history is off: {exc}", self.err)
