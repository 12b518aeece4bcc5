"""`ChatScreen`: conversation, prompt, load progress and status bar; sends, stops, retries."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.screen import Screen

from mergechat.core.api import (
    ChatMessage,
    EngineClient,
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
from mergechat.ui.engine_events import error_text
from mergechat.ui.widgets.assistant_message import AssistantMessage, format_footer
from mergechat.ui.widgets.conversation_view import ConversationView
from mergechat.ui.widgets.key_footer import KeyFooter
from mergechat.ui.widgets.load_progress import LoadProgress
from mergechat.ui.widgets.prompt_input import PromptInput
from mergechat.ui.widgets.status_bar import Phase, StatusBar, StatusInfo

if TYPE_CHECKING:
    from mergechat.core.store.export import ExportFormat

#: Why a prompt cannot be sent in each non-ready phase (the text stays in the input).
_NOT_READY: dict[Phase, str] = {
    "starting": "The model is still loading; your text stays in the input.",
    "loading": "The model is still loading; your text stays in the input.",
    "switching": "Precision is being switched; send again in a moment.",
    "generating": "A reply is streaming; press Esc to stop it first.",
    "no model": "No model is loaded: press F2 to choose one.",
    "error": "No model is loaded: press F2 to choose one.",
}


class ChatScreen(Screen[None]):
    """The main screen. The app routes reply events here (`reply_started` and friends)."""

    BINDINGS: ClassVar[list[BindingType]] = list(CHAT_BINDINGS)

    def __init__(
        self,
        engine: EngineClient,
        settings: Callable[[], GenerationSettings],
        status: StatusInfo | None = None,
        history: ChatRecorder | None = None,
    ) -> None:
        """``settings`` gives each request's generation settings; ``status`` is what the status
        bar shows in the first frame; ``history`` saves the chat (default: nothing is saved)."""
        super().__init__()
        self.engine = engine
        self._initial_status = status or StatusInfo()
        self._settings = settings
        self.saver = ChatSaver(history or ChatRecorder(None))
        self.conversation = Conversation()
        self._reply: AssistantMessage | None = None
        #: Events of the reply in flight that arrived while its widgets were still mounting.
        self._early: list[ReplyStarted | ReplyFinished | ReplyFailed] | None = None
        self._prompt_tokens = 0
        #: The prompt's hint; the app puts the keymap's send key in it.
        self.prompt_placeholder = "Message (Enter sends, ctrl+j newline)"

    def compose(self) -> ComposeResult:
        yield ConversationView(id="conversation")
        yield LoadProgress(id="load-progress")
        yield PromptInput(id="prompt", placeholder=self.prompt_placeholder)
        yield StatusBar(self._initial_status, id="status")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.prompt.focus()

    # -- widgets ----------------------------------------------------------------------------------
    @property
    def prompt(self) -> PromptInput:
        """The prompt input."""
        return self.query_one(PromptInput)

    @property
    def status(self) -> StatusBar:
        """The status bar."""
        return self.query_one(StatusBar)

    @property
    def view(self) -> ConversationView:
        """The conversation view."""
        return self.query_one(ConversationView)

    @property
    def load_progress(self) -> LoadProgress:
        """The load progress bar."""
        return self.query_one(LoadProgress)

    @property
    def phase(self) -> Phase:
        """The state shown in the status bar; it decides what may be sent."""
        return self.status.info.phase

    def set_phase(self, phase: Phase, **changes: Any) -> None:
        """Set the phase (and other status fields) and refresh which keys are active."""
        self.status.update_info(phase=phase, **changes)
        self.refresh_bindings()

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
        if self.phase != "ready":
            self.notify(_NOT_READY.get(self.phase, "Not ready."), severity="warning")
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
        if self._reply is not None:
            self._reply.set_footer("stopping…")

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
        if not self.conversation.can_regenerate or self.phase != "ready":
            self.notify("Nothing to regenerate right now.", severity="warning")
            return
        self._launch(self.conversation.drop_last_reply(), "regenerate")

    def action_continue_reply(self) -> None:
        """Continue the last reply where it was cut off (max_new_tokens or a stop)."""
        if not self.conversation.can_continue or self.phase != "ready":
            self.notify("The last reply is complete; nothing to continue.", severity="warning")
            return
        self._launch(list(self.conversation.messages), "continue")

    def action_new_chat(self) -> None:
        """Stop any reply and clear the conversation (a new one is saved from its first message)."""
        if self.conversation.busy:
            self.engine.cancel()
        self.saver.new_chat()  # a reply cut off here is saved as stopped
        self.conversation.clear()
        self._reply = None
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
        self._reply = None
        show_transcript(self.view, saved)
        phase: Phase = "ready" if self.phase == "generating" else self.phase
        self.set_phase(phase, tokens_per_s=None, context_used=saved.context_used() if saved else 0)

    def _launch(self, messages: list[ChatMessage], kind: ReplyKind, text: str = "") -> None:
        # "generating" at once, so a second Enter is refused while the messages mount.
        self.set_phase("generating", tokens_per_s=None)
        self.run_worker(self._start(messages, kind, text), group="chat")

    async def _start(self, messages: list[ChatMessage], kind: ReplyKind, text: str) -> None:
        # The engine is asked first, so the prompt's prefill runs while the widgets mount (that
        # takes 70-200 ms); its events wait in `_early` until the reply's widget exists.
        settings = self._settings()
        self.saver.reply_started(kind, settings)
        try:
            request_id = self.engine.generate(messages, settings, continue_last=kind == "continue")
        except Exception as error:  # the engine refused the request: say so, stay usable
            await self._mount_reply(kind, text)
            self.saver.failed("", str(error))
            if self._reply is not None:
                await self._reply.fail(str(error))
            self._reply = None
            self.set_phase("ready")
            self.notify(
                str(error), title="Could not start the reply", severity="error", markup=False
            )
            return
        self.conversation.begin(request_id, kind)
        self.refresh_bindings()
        self._early = []
        try:
            await self._mount_reply(kind, text)
        finally:
            early, self._early = self._early, None
        if self._reply is not None and self.conversation.is_current(request_id):
            self._reply.set_footer("waiting for the model…")
        for event in early:
            self._on_reply_event(event)
        self.view.scroll_end(animate=False)

    async def _mount_reply(self, kind: ReplyKind, text: str) -> None:
        """Show the user's message (a new turn) and the reply's widget, as ``self._reply``."""
        view = self.view
        if kind == "new":
            await view.add_user(text)
        last = view.last_assistant()
        if kind == "regenerate" and last is not None:
            await last.remove()
        if kind == "continue" and last is not None:
            self._reply = last
        else:
            self._reply = await view.add_assistant()

    def _on_reply_event(self, event: ReplyStarted | ReplyFinished | ReplyFailed) -> None:
        if isinstance(event, ReplyStarted):
            self.reply_started(event)
        elif isinstance(event, ReplyFinished):
            self.reply_finished(event)
        else:
            self.reply_failed(event)

    def _held(self, event: ReplyStarted | ReplyFinished | ReplyFailed) -> bool:
        """Keep ``event`` for later when its reply's widgets are still mounting."""
        if self._early is not None and self.conversation.is_current(event.request_id):
            self._early.append(event)
            return True
        return False

    # -- engine events (routed here by the app) ---------------------------------------------------
    def reply_started(self, event: ReplyStarted) -> None:
        """Start streaming the reply's text into its message."""
        if self._held(event):
            return
        if not self.conversation.is_current(event.request_id) or self._reply is None:
            return
        self._prompt_tokens = event.prompt_tokens
        self._reply.begin(event.stream)
        self.saver.streaming(event.stream)
        self.status.update_info(context_used=event.prompt_tokens, context_max=event.context_max)
        if event.dropped_messages:
            self.notify(
                f"{event.dropped_messages} older message(s) left out to fit the context window.",
                severity="warning",
            )

    def on_assistant_message_progress(self, message: AssistantMessage.Progress) -> None:
        message.stop()
        self.saver.progress()
        self.status.update_info(
            tokens_per_s=message.tokens_per_s, context_used=self._prompt_tokens + message.tokens
        )

    def reply_finished(self, event: ReplyFinished) -> None:
        """Render the whole reply once and show its stats."""
        if self._held(event):
            return
        if not self.conversation.is_current(event.request_id):
            return
        self.conversation.finish(event.text, event.finish)
        self.saver.finished(event)
        reply, self._reply = self._reply, None
        if reply is not None:
            reply.finish(event.text, format_footer(event.stats, event.finish))
        stats = event.stats
        self.set_phase(
            "ready",
            tokens_per_s=stats.decode_tokens_per_s,
            context_used=stats.context_used,
            context_max=stats.context_max,
        )

    def reply_failed(self, event: ReplyFailed) -> None:
        """Keep any partial text, mark the reply failed and tell the user once."""
        if self._held(event):
            return
        if not self.conversation.is_current(event.request_id):
            return
        self.conversation.fail()
        self.saver.failed(event.partial_text, event.message)
        reply, self._reply = self._reply, None
        if reply is not None:
            reply.fail(event.message, event.partial_text)
        self.set_phase("ready")
        text = error_text(event.message, event.hint)
        self.notify(text, title="Reply failed", severity="error", markup=False)
