"""`ChatRecorder`: saves one conversation's turns as they happen, for the app and for one-shot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from mergechat.core.api import FinishReason, ModelState, ReplyStats, Role
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.records import HistoryUnavailable, StoredMessage, UnknownConversation
from mergechat.core.store.reply_writer import STORED_STATES, ReplyHandle, ReplyWriter
from mergechat.core.store.session import HistorySession, ModelPath

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from mergechat.core.store.records import MessageState, ReplyDetails

#: How a reply is asked for: a new one, one replacing the last reply, or one extending it.
ReplyKind = Literal["new", "regenerate", "continue"]


class ChatRecorder(HistorySession):
    """Saves a chat to a `HistoryStore` as it happens; with no store every method does nothing.

    Texts passed to the reply methods are what *this request* generated (``ReplyStream.text``,
    ``ReplyFinished.text``, ``ReplyFailed.partial_text``); a continuation is appended to the
    reply it continues. A failing write turns history off (`HistorySession`); the chat goes on.
    """

    # -- messages ---------------------------------------------------------------------------------
    def user_message(self, text: str) -> None:
        """Save a sent message (committed at once); call it before asking the engine."""
        if self._add("user", text, "complete") is not None:
            self._last_reply_id = None

    def reply_started(
        self,
        kind: ReplyKind = "new",
        settings: GenerationSettings | None = None,
        *,
        model: ModelState | None = None,
    ) -> ReplyHandle | None:
        """Create the reply's row (state ``streaming``) with what produces it (``settings``, the
        model, its device and precision: ``model``, else ``model_state()``); None when off.

        ``regenerate`` first deletes the last reply (when the conversation ends with one);
        ``continue`` extends the last reply in place.
        """
        if self.store is None:
            return None
        if kind == "regenerate":
            self.drop_last_reply()
        continues = self._last_reply() if kind == "continue" else None
        if continues is not None:
            message_id: int | None = continues.id
        else:
            message_id = self._add("assistant", "", "streaming")
        if message_id is None or self.store is None:
            return None
        self._note_producer(message_id, settings, model)
        if self.store is None:
            return None
        initial = continues.text if continues is not None else ""
        writer = ReplyWriter(self.store, message_id, self.interval_s, initial_text=initial)
        handle = ReplyHandle(writer, continues)
        self._last_reply_id = message_id
        self._replies.append(handle)
        return handle

    def reply_progress(self, handle: ReplyHandle | None, text: str) -> None:
        """This request's text so far; saved at most once per ``interval_s``."""
        if handle is not None and self.store is not None:
            self._guard(lambda: handle.writer.update(handle.full_text(text)))

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
        if handle is not None:
            model = model_path if model_path is not None else self._model_path
            self._end(
                handle,
                handle.full_text(text),
                STORED_STATES[finish],
                stats=stats,
                settings=settings,
                model_path=model,
                finish_reason=finish,
            )

    def reply_failed(self, handle: ReplyHandle | None, partial: str, message: str) -> None:
        """Save a failed reply: its partial text and the error (state ``failed``).

        A failed continuation leaves the reply it continued as it was (as the chat does).
        """
        if handle is None:
            return
        old = handle.continues
        if old is not None:
            self._end(handle, old.text, old.state)
        else:
            self._end(handle, partial, STORED_STATES["failed"], error=message)

    def reply_interrupted(self, handle: ReplyHandle | None, text: str | None = None) -> None:
        """Save a reply cut off (quit, Ctrl+C, SIGHUP, SIGTERM) as ``stopped``: ``text`` (what
        this request generated), or the latest text given to `reply_progress`."""
        if handle is not None:
            full = handle.writer.pending_text if text is None else handle.full_text(text)
            self._end(handle, full, STORED_STATES["interrupted"], finish_reason="stopped")

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
            if interrupted:
                self.reply_interrupted(handle)
            else:
                self._guard(handle.writer.flush)

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
    def _end(
        self, handle: ReplyHandle, text: str, state: MessageState, **details: Unpack[ReplyDetails]
    ) -> None:
        """Write a reply's final text once; later events for it change nothing."""
        if self.store is not None:
            self._guard(lambda: handle.writer.finish(text, state, **details))
        if handle in self._replies:
            self._replies.remove(handle)

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

    def _note_producer(
        self, message_id: int, settings: GenerationSettings | None, model: ModelState | None
    ) -> None:
        store = self.store
        state = model if model is not None else self.model_state() if self.model_state else None
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
