"""`ChatSaver`: the chat screen's link to its `ChatRecorder`: the reply in flight, its settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mergechat.core.api import ChatMessage, ReplyFinished
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.recorder import ChatRecorder
from mergechat.core.store.records import Conversation as SavedConversation
from mergechat.core.store.reply_writer import ReplyHandle
from mergechat.core.streaming import ReplyStream
from mergechat.ui.conversation import ReplyKind


@dataclass
class _Recording:
    """The reply being saved: its recorder handle, the settings it was asked with, its stream."""

    handle: ReplyHandle | None
    settings: GenerationSettings
    stream: ReplyStream | None = None


class ChatSaver:
    """Calls the `ChatRecorder` at each step of the chat; a no-op while history is off.

    The chat screen calls it only for the reply it is showing, so events of a reply that was
    cut off (new chat, another conversation opened) never reach the history.
    """

    def __init__(self, history: ChatRecorder) -> None:
        self.history = history
        self.model_path: Path | None = None
        self._current: _Recording | None = None

    def use_model(self, path: Path) -> None:
        """The model now loaded; new conversations and replies are saved with it."""
        self.model_path = path
        self.history.set_model(path)

    def user_message(self, text: str) -> None:
        """A sent message: committed now, before the engine is asked."""
        self.history.user_message(text)

    def reply_started(self, kind: ReplyKind, settings: GenerationSettings) -> None:
        """A reply is about to be asked for with ``settings`` (its row is created now)."""
        self._current = _Recording(self.history.reply_started(kind, settings), settings)

    def streaming(self, stream: ReplyStream) -> None:
        """The engine started the reply: its text comes from ``stream``."""
        if self._current is not None:
            self._current.stream = stream

    def progress(self) -> None:
        """Hand over the streaming text (the history writes it about once a second)."""
        current = self._current
        if current is not None and current.stream is not None:
            self.history.reply_progress(current.handle, current.stream.text)

    def finished(self, event: ReplyFinished) -> None:
        """Save the finished reply with its stats and settings."""
        current, self._current = self._current, None
        if current is not None:
            self.history.reply_finished(
                current.handle, event.text, event.finish, event.stats, current.settings
            )

    def failed(self, partial: str, message: str) -> None:
        """Save a failed (or refused) reply."""
        current, self._current = self._current, None
        if current is not None:
            self.history.reply_failed(current.handle, partial, message)

    def new_chat(self) -> None:
        """Save a reply cut off as stopped and begin a new conversation."""
        self._current = None
        self.history.flush()
        self.history.start(self.model_path)

    def resume(self, conv_id: int) -> tuple[list[ChatMessage], SavedConversation | None]:
        """Save a reply cut off as stopped and continue conversation ``conv_id``.

        Returns its turns (the model's context) and the saved conversation (None if gone).
        """
        self._current = None
        self.history.flush()
        messages = self.history.resume(conv_id)
        return messages, self.history.conversation
