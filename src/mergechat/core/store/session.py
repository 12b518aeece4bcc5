"""`HistorySession`: which conversation a chat writes to, and the guard that turns history off."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from mergechat.core.api import ChatMessage, ModelState
from mergechat.core.store.records import Conversation, HistoryUnavailable, UnknownConversation

if TYPE_CHECKING:
    from mergechat.core.store.lock import ConversationLocks
    from mergechat.core.store.reply_writer import ReplyHandle
    from mergechat.core.store.store import HistoryStore

ModelPath = str | os.PathLike[str] | None


class HistorySession:
    """Which conversation the chat writes to; with no store (history off) it does nothing.

    The first failing write turns history off: the store is closed, ``on_off`` hears why once,
    and the chat goes on unsaved. With ``locks``, a conversation another mergechat has open is
    never written here (``on_notice`` says so). With ``remember_open`` each model's open
    conversation is noted, for the app's next start to reopen. One thread only.
    """

    def __init__(
        self,
        store: HistoryStore | None = None,
        on_off: Callable[[HistoryUnavailable], None] | None = None,
        *,
        interval_s: float = 1.0,
        locks: ConversationLocks | None = None,
        on_notice: Callable[[str], None] | None = None,
        model_state: Callable[[], ModelState | None] | None = None,
        remember_open: bool = True,
    ) -> None:
        """Record into ``store``, writing a streaming reply at most once per ``interval_s``;
        ``model_state`` tells which device and precision produce each reply."""
        self.store = store
        self.interval_s = interval_s
        self.locks = locks
        #: Told why history turned off (once), and why a held conversation was not continued.
        self.on_off, self.on_notice = on_off, on_notice
        self.model_state = model_state
        self.remember_open = remember_open
        self.conversation_id: int | None = None
        #: The conversation last opened with `resume` (to show its replies with their stats).
        self.conversation: Conversation | None = None
        self._model_path: ModelPath = None
        self._last_reply_id: int | None = None
        #: The replies being written (saved as stopped when the chat ends).
        self._replies: list[ReplyHandle] = []

    @property
    def enabled(self) -> bool:
        """True while messages are being saved."""
        return self.store is not None

    def open_store(self, *, hold_conversations: bool = False) -> None:
        """Open the default store; with ``hold_conversations`` also lock what this chat writes.

        A store that cannot be used turns history off (``on_off`` hears why).
        """
        from mergechat.core.store.store import HistoryStore

        try:
            self.store = store = HistoryStore.open()
        except HistoryUnavailable as exc:
            self._report(exc)
            return
        if hold_conversations:
            from mergechat.core.store.lock import ConversationLocks

            self.locks = ConversationLocks.beside(store.path)

    # -- conversations ----------------------------------------------------------------------------
    def start(self, model_path: ModelPath) -> None:
        """Begin a new conversation with ``model_path``; it is created with its first message."""
        self._model_path = model_path
        self._leave()
        self.conversation = None
        self._last_reply_id = None
        self._note_open()

    def set_model(self, model_path: ModelPath) -> None:
        """Note the model now loaded (recorded on new conversations and replies)."""
        self._model_path = model_path

    def resume(self, conv_id: int) -> list[ChatMessage]:
        """Continue conversation ``conv_id``; return its turns to give the model as context.

        Returns [] (and starts a new conversation) when it no longer exists or history is off.
        """
        if self.store is None:
            return []
        try:
            conversation = self.store.get_conversation(conv_id)
        except UnknownConversation:
            self.start(self._model_path)
            return []
        except HistoryUnavailable as exc:
            self._turn_off(exc)
            return []
        owner = self.held_elsewhere(conv_id)
        if owner is not None:
            self.start(self._model_path)
            self._say(
                f"“{conversation.title}” is open in another mergechat ({owner}), so it is not "
                "continued here: this is a new chat."
            )
            return []
        if self.conversation_id != conv_id:
            self._leave()
        if self.locks is not None:
            self.locks.acquire(conv_id)
        self.conversation_id = conversation.id
        self.conversation = conversation
        last = conversation.messages[-1] if conversation.messages else None
        self._last_reply_id = last.id if last is not None and last.role == "assistant" else None
        self._note_open()
        return conversation.chat_messages()

    def resume_last(self, model_path: ModelPath) -> list[ChatMessage]:
        """Reopen the conversation the app last had open with ``model_path`` (else the latest
        one with it), or start a new one; return its turns."""
        store = self.store
        if store is None or not model_path:
            self.start(model_path)
            return []
        self._model_path = model_path
        try:
            known, last = store.last_opened_in_app(model_path)
            if not known:
                last = store.last_conversation_for_model(model_path)
        except HistoryUnavailable as exc:
            self._turn_off(exc)
            return []
        if last is None:
            self.start(model_path)
            return []
        return self.resume(last)

    def held_elsewhere(self, conv_id: int) -> str | None:
        """Who else has ``conv_id`` open ("pid 123"), or None when it is free or ours."""
        locks = self.locks
        if locks is None or locks.holds(conv_id):
            return None
        owner = locks.acquire(conv_id)
        if owner is None:
            if conv_id != self.conversation_id:
                locks.release(conv_id)
            return None
        return f"pid {owner}" if owner else "another process"

    # -- plumbing ---------------------------------------------------------------------------------
    def _created(self, conv_id: int) -> None:
        """A new conversation was created for this chat: hold it and note it as open."""
        self.conversation_id = conv_id
        if self.locks is not None:
            self.locks.acquire(conv_id)
        self._note_open()

    def _leave(self) -> None:
        """Let the current conversation go (another mergechat may continue it now)."""
        if self.locks is not None and self.conversation_id is not None:
            self.locks.release(self.conversation_id)
        self.conversation_id = None

    def _note_open(self) -> None:
        store, model = self.store, self._model_path
        if store is not None and model and self.remember_open:
            conv_id = self.conversation_id
            self._guard(lambda: store.set_last_opened_in_app(model, conv_id))

    def _say(self, text: str) -> None:
        if self.on_notice is not None:
            self.on_notice(text)

    def _guard(self, write: Callable[[], object]) -> None:
        """Run ``write``; a failure turns history off instead of reaching the chat."""
        try:
            write()
        except HistoryUnavailable as exc:
            self._turn_off(exc)

    def _turn_off(self, exc: HistoryUnavailable) -> None:
        store, self.store = self.store, None
        self._replies.clear()
        if store is None:
            return  # already off (an outer write failing after a nested one did)
        if self.locks is not None:
            self.locks.release_all()
        store.close()
        self._report(exc)

    def _report(self, exc: HistoryUnavailable) -> None:
        if self.on_off is not None:
            self.on_off(exc)
