"""`AppHistory`: the app's side of the history: the store, resume, the list, signals."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from mergechat.core.store.recorder import ChatRecorder
from mergechat.core.store.records import HistoryUnavailable
from mergechat.core.termination import add_loop_handlers, exit_watchdog, remove_loop_handlers

if TYPE_CHECKING:
    from mergechat.ui.protocols import HistoryHost
    from mergechat.ui.screens.conversations import OpenConversation

#: Seconds a clean exit after SIGHUP/SIGTERM may take before the process ends regardless.
SIGNAL_EXIT_GRACE_S = 3.0


class AppHistory:
    """Opens the store on mount (or says why history is off), reopens the start-up conversation,
    runs the conversations screen, and saves everything when SIGHUP or SIGTERM arrives."""

    def __init__(self, app: HistoryHost) -> None:
        self.app = app
        #: What the chat screen saves through (no store until `open`: history off).
        self.history = ChatRecorder(
            None, self._turned_off, on_notice=self._notice, model_state=lambda: app.model_state
        )
        #: Why history is off, told when the conversations key is pressed.
        self.off_reason: str | None = None
        #: Ends the process if a clean exit after a signal hangs (cancelled by `run_app`).
        self.exit_watchdog: threading.Timer | None = None
        self._signals: list[int] = []

    def open(self) -> None:
        """Open the store (unless turned off) and take SIGHUP/SIGTERM; on the UI thread."""
        app = self.app
        if app.options.no_history:
            self.off_reason = "History is off for this run (--no-history)."
        elif not app.config.history.enabled:
            self.off_reason = "History is off ([history] enabled = false in the config)."
        else:
            self.history.open_store(hold_conversations=True)
        self._signals = add_loop_handlers(asyncio.get_running_loop(), self._on_signal)

    def close(self) -> None:
        """Save a streaming reply as stopped, close the store, give the signals back."""
        self.history.close()
        remove_loop_handlers(asyncio.get_running_loop(), self._signals)
        self._signals = []

    def _turned_off(self, exc: HistoryUnavailable) -> None:
        self.off_reason = text = f"History is off: {exc}"
        self.app.notify(text, title="History", severity="warning", timeout=15, markup=False)

    def _notice(self, text: str) -> None:
        self.app.notify(text, title="Conversation", severity="warning", timeout=10, markup=False)

    def startup_conversation(self, model_path: Path) -> None:
        """After the first load: reopen the model's last conversation, or start a new one."""
        app = self.app
        if not app.config.history.resume_last:
            self.history.start(model_path)
            return
        messages = self.history.resume_last(model_path)
        saved = self.history.conversation
        if saved is not None:
            app.chat.show_conversation(messages, saved)
            app.notify(
                f"Continuing “{saved.title}” ({len(saved.messages)} messages); "
                "ctrl+n starts a new chat, F4 lists the others.",
                title="Conversation",
                markup=False,
            )

    def show_list(self) -> None:
        """Push the conversations screen, or say why history is off."""
        store = self.history.store
        if store is None:
            message = self.off_reason or "History is off."
            self.app.notify(message, severity="warning", markup=False)
            return
        from mergechat.ui.screens.conversations import ConversationsScreen

        screen = ConversationsScreen(store, self.history.conversation_id)
        self.app.push_screen(screen, self._chosen)

    def _chosen(self, choice: OpenConversation | None) -> None:
        if choice is None:
            return
        owner = self.history.held_elsewhere(choice.id)
        if owner is not None:
            # One writer per conversation: the chat on screen stays as it is.
            self._notice(f"That conversation is open in another mergechat ({owner}).")
            return
        self.app.chat.open_conversation(choice.id)
        saved = self.history.conversation
        if saved is not None:
            self.app.notify(f"Opened “{saved.title}”.", title="Conversation", markup=False)

    def deleted(self, conv_id: int) -> None:
        """A conversation was deleted; the open one is replaced by a new chat."""
        if conv_id == self.history.conversation_id:
            self.app.chat.action_new_chat()

    def _on_signal(self, signum: int) -> None:
        """SIGHUP (the terminal or SSH session went away) or SIGTERM: save, then exit 0."""
        app = self.app
        app.chat.saver.progress()
        self.history.close()  # a streaming reply is saved as stopped with its text so far
        app.engine.cancel()
        if not app.is_headless:
            # Restoring a terminal that is gone can block forever; end the process anyway.
            self.exit_watchdog = exit_watchdog(SIGNAL_EXIT_GRACE_S, 0)
        app.exit(0)
