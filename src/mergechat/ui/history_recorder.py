"""`ChatHistory`: what the chat screen calls to save a conversation as it happens (UI thread)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Literal

from mergechat.core.api import FinishReason, ModelState, ReplyStats, Role
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.records import (
    HistoryUnavailable,
    MessageState,
    StoredMessage,
    UnknownConversation,
)
from mergechat.ui.history_session import HistorySession, ModelPath

if TYPE_CHECKING:
    from mergechat.core.store.lock import ConversationLocks
    from mergechat.core.store.recorder import ReplyRecorder
    from mergechat.core.store.store import HistoryStore

#: The same kinds as the chat screen's `ReplyKind`.
ReplyKind = Literal["new", "regenerate", "continue"]
#: Engine finish reasons as stored message states ("length" is a complete reply that hit the cap).
_STATES: dict[str, MessageState] = {
    "complete": "complete",
    "length": "complete",
    "stopped": "stopped",
}


@dataclass
class ReplyHandle:
    """One reply being recorded; returned by `ChatHistory.reply_started`."""

    recorder: ReplyRecorder
    #: For a continuation: the stored reply it extends (its text is kept in front).
    continues: StoredMessage | None = None

    @property
    def message_id(self) -> int:
        """The stored message's id."""
        return self.recorder.message_id

    def full_text(self, text: str) -> str:
        """The message's text given what this request generated."""
        return self.continues.text + text if self.continues is not None else text


class ChatHistory(HistorySession):
    """Saves the chat to a `HistoryStore` as it happens; with no store every method does nothing.

    Texts passed to the reply methods are what *this request* generated (``ReplyStream.text``,
    ``ReplyFinished.text``, ``ReplyFailed.partial_text``); a continuation is appended to the
    reply it continues. UI thread only.
    """

    def __init__(
        self,
        store: HistoryStore | None,
        on_error: Callable[[str], None] | None = None,
        *,
        interval_s: float = 1.0,
        locks: ConversationLocks | None = None,
        on_notice: Callable[[str], None] | None = None,
        model_state: Callable[[], ModelState | None] | None = None,
    ) -> None:
        """As `HistorySession`; no reply is being recorded yet."""
        super().__init__(
            store,
            on_error,
            interval_s=interval_s,
            locks=locks,
            on_notice=on_notice,
            model_state=model_state,
        )
        self._replies: list[ReplyHandle] = []

    # -- messages ---------------------------------------------------------------------------------
    def user_message(self, text: str) -> None:
        """Save a sent message (committed at once); call it before asking the engine."""
        if self._add("user", text, "complete") is not None:
            self._last_reply_id = None

    def reply_started(
        self, kind: ReplyKind = "new", settings: GenerationSettings | None = None
    ) -> ReplyHandle | None:
        """Create the reply's row (state ``streaming``) with what produces it (``settings``, the
        model, its device and precision); None when history is off.

        ``regenerate`` first deletes the last reply (when the conversation ends with one);
        ``continue`` extends the last reply in place.
        """
        if self.store is None:
            return None
        from mergechat.core.store.recorder import ReplyRecorder

        if kind == "regenerate":
            self.drop_last_reply()
        continues = self._last_reply() if kind == "continue" else None
        if continues is not None:
            message_id: int | None = continues.id
        else:
            message_id = self._add("assistant", "", "streaming")
        if message_id is None or self.store is None:
            return None
        self._note_producer(message_id, settings)
        if self.store is None:
            return None
        initial = continues.text if continues is not None else ""
        recorder = ReplyRecorder(self.store, message_id, self.interval_s, initial_text=initial)
        handle = ReplyHandle(recorder, continues)
        self._last_reply_id = message_id
        self._replies.append(handle)
        return handle

    def reply_progress(self, handle: ReplyHandle | None, text: str) -> None:
        """This request's text so far; saved at most once per ``interval_s``."""
        if handle is not None and self.store is not None:
            self._guard(lambda: handle.recorder.update(handle.full_text(text)))

    def reply_finished(
        self,
        handle: ReplyHandle | None,
        text: str,
        finish: FinishReason,
        stats: ReplyStats | None,
        settings: GenerationSettings | None,
        model_path: ModelPath = None,
    ) -> None:
        """Save the final reply with what produced it (device, dtype, parameters, speed)."""
        if handle is None or self.store is None:
            return
        model = model_path if model_path is not None else self._model_path
        self._guard(
            lambda: handle.recorder.finish(
                handle.full_text(text),
                _STATES.get(finish, "complete"),
                stats,
                settings,
                model_path=model,
                finish_reason=finish,
            )
        )
        self._forget(handle)

    def reply_failed(self, handle: ReplyHandle | None, partial: str, message: str) -> None:
        """Save a failed reply: its partial text and the error (state ``failed``).

        A failed continuation leaves the reply it continued as it was (as the chat does).
        """
        if handle is None or self.store is None:
            return
        old = handle.continues
        if old is not None:
            self._guard(lambda: handle.recorder.finish(old.text, old.state))
        else:
            self._guard(lambda: handle.recorder.finish(partial, "failed", error=message))
        self._forget(handle)

    def drop_last_reply(self) -> None:
        """Delete the last reply if the conversation ends with it (it is being regenerated)."""
        if self.store is None or self._last_reply_id is None:
            return
        store, message_id, self._last_reply_id = self.store, self._last_reply_id, None
        self._guard(lambda: store.delete_message(message_id))

    def flush(self, *, interrupted: bool = True) -> None:
        """Save every reply in progress now (on quit, SIGHUP, SIGTERM).

        With ``interrupted`` they are marked ``stopped`` with their text so far, as the process
        is going away; otherwise they stay ``streaming``.
        """
        for handle in list(self._replies):
            if self.store is None:
                return
            recorder = handle.recorder
            if interrupted:
                finish = partial(recorder.finish, finish_reason="stopped")
                self._guard(partial(finish, recorder.pending_text, "stopped"))
                self._forget(handle)
            else:
                self._guard(recorder.flush)

    def close(self) -> None:
        """Save replies in progress (as stopped) and close the store; history is off afterwards."""
        self.flush()
        self._note_open()  # the last one to quit says what to reopen
        store, self.store = self.store, None
        if self.locks is not None:
            self.locks.release_all()
        if store is not None:
            store.close()

    # -- plumbing ---------------------------------------------------------------------------------
    def _add(self, role: Role, text: str, state: MessageState) -> int | None:
        store = self.store
        if store is None:
            return None
        try:
            if self.conversation_id is None:
                self._created(store.new_conversation(self._model_path))
            try:
                return store.add_message(self.conversation_id or 0, role, text, state)
            except UnknownConversation:
                # Deleted meanwhile (conversations screen or the CLI): carry on in a new one.
                self._leave()
                self._created(store.new_conversation(self._model_path))
                self._last_reply_id = None
                return store.add_message(self.conversation_id or 0, role, text, state)
        except HistoryUnavailable as exc:
            self._turn_off(exc)
            return None

    def _last_reply(self) -> StoredMessage | None:
        """The stored last reply of the current conversation (None: none, gone or history off)."""
        if self.store is None or self.conversation_id is None or self._last_reply_id is None:
            return None
        try:
            conversation = self.store.get_conversation(self.conversation_id)
        except UnknownConversation:
            return None
        except HistoryUnavailable as exc:
            self._turn_off(exc)
            return None
        return next((m for m in conversation.messages if m.id == self._last_reply_id), None)

    def _note_producer(self, message_id: int, settings: GenerationSettings | None) -> None:
        store, state = self.store, self.model_state() if self.model_state else None
        if store is None:
            return
        self._guard(
            lambda: store.record_producer(
                message_id,
                settings=settings,
                model_path=state.path if state is not None else self._model_path,
                device=state.device if state is not None else None,
                dtype=state.dtype if state is not None else None,
            )
        )

    def _forget(self, handle: ReplyHandle) -> None:
        if handle in self._replies:
            self._replies.remove(handle)

    def _turn_off(self, exc: HistoryUnavailable) -> None:
        self._replies.clear()
        super()._turn_off(exc)
