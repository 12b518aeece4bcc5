"""`ChatScreen`: conversation, prompt, load progress and status bar; sends, stops, retries.

Whether a prompt may be sent is the `Session`'s phase; replies run through `ReplyFlow`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.screen import Screen

from mergechat.core.api import (
    ChatMessage,
    EngineClient,
    ModelState,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
)
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.recorder import ChatRecorder
from mergechat.core.store.records import Conversation as SavedConversation
from mergechat.ui.bindings import CHAT_BINDINGS
from mergechat.ui.chat_saver import ChatSaver
from mergechat.ui.conversation import Conversation, ReplyKind
from mergechat.ui.screens.chat_replies import ReplyFlow
from mergechat.ui.session import Phase, Session
from mergechat.ui.widgets.assistant_message import AssistantMessage
from mergechat.ui.widgets.conversation_view import ConversationView
from mergechat.ui.widgets.key_footer import KeyFooter
from mergechat.ui.widgets.load_progress import LoadProgress
from mergechat.ui.widgets.prompt_input import PromptInput
from mergechat.ui.widgets.status_bar import StatusBar, StatusInfo

if TYPE_CHECKING:
    from mergechat.core.store.export import ExportFormat

#: The status fields that describe a model, cleared when none is loaded.
_NO_MODEL: dict[str, Any] = {
    "model": "",
    "device": "",
    "dtype": "",
    "merge_method": None,
    "context_max": None,
    "fallback_template": False,
}


class ChatScreen(Screen[None]):
    """The main screen. The engine-event router tells it what changed (`ChatPort`)."""

    BINDINGS: ClassVar[list[BindingType]] = list(CHAT_BINDINGS)

    def __init__(
        self,
        engine: EngineClient,
        settings: Callable[[], GenerationSettings],
        status: StatusInfo | None = None,
        history: ChatRecorder | None = None,
        session: Session | None = None,
    ) -> None:
        """``settings`` gives each request's generation settings; ``status`` is what the status
        bar shows in the first frame; ``history`` saves the chat (default: nothing is saved);
        ``session`` is the app's state (default: one of its own, in the status's phase)."""
        super().__init__()
        self.engine = engine
        self._initial_status = status or StatusInfo()
        self.session = session or Session(phase=self._initial_status.phase)
        self.saver = ChatSaver(history or ChatRecorder(None))
        self.conversation = Conversation()
        self.replies = ReplyFlow(self, settings)
        #: The prompt's hint; the app puts the keymap's send key in it.
        self.prompt_placeholder = "Message (Enter sends, ctrl+j newline)"

    def compose(self) -> ComposeResult:
        # Kept as attributes: the stream and the status bar reach them many times a second.
        self.view = ConversationView(id="conversation")
        self.load_progress = LoadProgress(id="load-progress")
        self.prompt = PromptInput(id="prompt", placeholder=self.prompt_placeholder)
        self.status = StatusBar(self._initial_status, id="status")
        yield self.view
        yield self.load_progress
        yield self.prompt
        yield self.status
        yield KeyFooter()

    def on_mount(self) -> None:
        self.prompt.focus()

    @property
    def phase(self) -> Phase:
        """The session's phase (the status bar shows it); it decides what may be sent."""
        return self.session.phase

    def set_phase(self, phase: Phase, **changes: Any) -> None:
        """Set the phase (and other status fields) and refresh which keys are active."""
        self.session.phase = phase
        self.status.update_info(phase=phase, **changes)
        self.refresh_bindings()

    def update_status(self, **changes: Any) -> None:
        """Replace some status bar fields (never the phase: `set_phase` does that)."""
        self.status.update_info(**changes)

    # -- what engine events change (the router calls these) ---------------------------------------
    def show_load_progress(self, stage: str, fraction: float, detail: str, **changes: Any) -> None:
        """A load step: the phase, its percentage and the progress line."""
        self.set_phase("loading", progress=fraction, **changes)
        self.load_progress.show_progress(stage, fraction, detail)

    def hide_load_progress(self) -> None:
        """The load ended (loaded, failed or the engine went away)."""
        self.load_progress.hide()

    def show_model(self, state: ModelState, *, new: bool = False) -> None:
        """``state`` is the model now, ready to chat (``new``: just loaded, no figures yet)."""
        info = self.status.info.with_model(state)
        if new:
            info = replace(info, tokens_per_s=None, context_used=0)
        self.status.set_info(info)
        self.set_phase("ready")

    def show_no_model(self) -> None:
        """No model is loaded: the error phase, the model's fields cleared."""
        self.set_phase("error", **_NO_MODEL)

    def show_queued(self, dtype: str | None) -> None:
        """The precision a switch waits to bring after the streaming reply (None: none)."""
        self.update_status(queued_dtype=dtype or "")

    # -- bindings ---------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self.conversation.busy
        if action == "continue_reply":
            return self.conversation.can_continue
        if action == "regenerate":
            return True if self.conversation.can_regenerate else None
        return True

    def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        message.stop()
        self.action_send()

    def action_send(self) -> None:
        """Send the prompt's text as a new user turn."""
        text = self.prompt.text
        if not text.strip():
            return
        if not self.session.ready:
            self.notify(self.session.not_ready_text(), severity="warning")
            return
        self.prompt.accept()
        messages = self.conversation.add_user(text)
        self.saver.user_message(text)  # committed before the engine is asked
        self._launch(messages, "new", text)

    def action_stop(self) -> None:
        """Stop the reply in flight; its partial text is kept and marked stopped."""
        if not self.conversation.busy:
            return
        self.engine.cancel()
        self.replies.stopping()

    def action_interrupt(self) -> None:
        """ctrl+c: stop a streaming reply; otherwise copy a selection or say how to quit."""
        if self.conversation.busy:
            self.action_stop()
            return
        if self.focused is self.prompt and self.prompt.selected_text:
            raise SkipAction()  # let the prompt copy the selection
        self.notify("ctrl+c does not quit: press ctrl+q to quit.", title="Quit?")

    def action_regenerate(self) -> None:
        """Drop the last reply and ask for a new one."""
        if not self.conversation.can_regenerate or not self.session.ready:
            self.notify("Nothing to regenerate right now.", severity="warning")
            return
        self._launch(self.conversation.drop_last_reply(), "regenerate")

    def action_continue_reply(self) -> None:
        """Continue the last reply where it was cut off (max_new_tokens or a stop)."""
        if not self.conversation.can_continue or not self.session.ready:
            self.notify("The last reply is complete; nothing to continue.", severity="warning")
            return
        self._launch(list(self.conversation.messages), "continue")

    def action_new_chat(self) -> None:
        """Stop any reply and clear the conversation (a new one is saved from its first message)."""
        if self.conversation.busy:
            self.engine.cancel()
        self.saver.new_chat()  # a reply cut off here is saved as stopped
        self.conversation.clear()
        self.replies.reply = None
        self.run_worker(self.view.clear(), group="chat")
        phase: Phase = "ready" if self.phase == "generating" else self.phase
        self.set_phase(phase, tokens_per_s=None, context_used=0)

    # Copy, export and transcript modules are imported when first used: not before the first frame.
    def action_copy_last(self) -> None:
        """Copy the last reply to the terminal's clipboard (OSC 52: works over SSH)."""
        from mergechat.ui import copy_export

        copy_export.copy_last_reply(self.app, self.conversation.messages)

    def action_copy_menu(self) -> None:
        """Choose a message, or one of its code blocks, to copy."""
        from mergechat.ui import copy_export

        copy_export.open_copy_menu(self.app, self.conversation.messages)

    def action_export(self, fmt: ExportFormat | None = None) -> None:
        """Export the conversation: ask for the file, or with ``fmt`` write to the default one."""
        from mergechat.ui import copy_export

        if fmt is None:
            copy_export.open_export_dialog(self.app, self.saver.history)
        else:
            copy_export.export_conversation(self.app, self.saver.history, fmt)

    # -- history ----------------------------------------------------------------------------------
    def use_model(self, path: Path) -> None:
        """Note the model just loaded: new conversations and replies are saved with it."""
        self.saver.use_model(path)

    def open_conversation(self, conv_id: int) -> None:
        """Stop any reply and continue saved conversation ``conv_id`` (it becomes the context)."""
        if self.conversation.busy:
            self.engine.cancel()
        self.show_conversation(*self.saver.resume(conv_id))

    def show_conversation(
        self, messages: list[ChatMessage], saved: SavedConversation | None
    ) -> None:
        """Show ``saved`` (replies with their footers); ``messages`` become the model's context."""
        from mergechat.ui.transcript import resumed_finish, show_transcript

        self.conversation.clear()
        self.conversation.messages.extend(messages)
        self.conversation.last_finish = resumed_finish(saved) if saved is not None else None
        self.replies.reply = None
        show_transcript(self.view, saved)
        phase: Phase = "ready" if self.phase == "generating" else self.phase
        self.set_phase(phase, tokens_per_s=None, context_used=saved.context_used() if saved else 0)

    def _launch(self, messages: list[ChatMessage], kind: ReplyKind, text: str = "") -> None:
        # "generating" at once, so a second Enter is refused while the messages mount.
        self.set_phase("generating", tokens_per_s=None)
        self.run_worker(self.replies.start(messages, kind, text), group="chat")

    # -- reply events (routed here by the app) ----------------------------------------------------
    def reply_started(self, event: ReplyStarted) -> None:
        """Start streaming the reply's text into its message."""
        self.replies.started(event)

    def on_assistant_message_progress(self, message: AssistantMessage.Progress) -> None:
        message.stop()
        self.replies.progress(message.tokens_per_s, message.tokens)

    def reply_finished(self, event: ReplyFinished) -> None:
        """Render the whole reply once and show its stats."""
        self.replies.finished(event)

    def reply_failed(self, event: ReplyFailed) -> None:
        """Keep any partial text, mark the reply failed and tell the user once."""
        self.replies.failed(event)
