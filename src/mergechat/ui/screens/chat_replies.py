"""`ReplyFlow`: one reply's way from the request to its widget, the status bar and the history.

The chat screen owns one; it asks the engine first and mounts the reply's widgets meanwhile, so
events that arrive before the widget exists are held and applied once it does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from mergechat.core.api import ChatMessage, EngineClient, ReplyFailed, ReplyFinished, ReplyStarted
from mergechat.core.settings.generation import GenerationSettings
from mergechat.ui.chat_saver import ChatSaver
from mergechat.ui.conversation import Conversation, ReplyKind
from mergechat.ui.engine_events import error_text
from mergechat.ui.session import Phase
from mergechat.ui.widgets.assistant_message import AssistantMessage, format_footer
from mergechat.ui.widgets.conversation_view import ConversationView

ReplyEvent = ReplyStarted | ReplyFinished | ReplyFailed


class ReplyScreen(Protocol):
    """What the reply flow uses of the chat screen."""

    @property
    def engine(self) -> EngineClient: ...
    @property
    def saver(self) -> ChatSaver: ...
    @property
    def conversation(self) -> Conversation: ...
    @property
    def view(self) -> ConversationView: ...
    def set_phase(self, phase: Phase, **changes: Any) -> None: ...
    def update_status(self, **changes: Any) -> None: ...
    def refresh_bindings(self) -> None: ...
    def notify(
        self, message: str, *, title: str = "", severity: Any = "information", markup: bool = True
    ) -> None: ...


class ReplyFlow:
    """Starts replies and applies their events (``settings`` gives each request's settings)."""

    def __init__(self, screen: ReplyScreen, settings: Callable[[], GenerationSettings]) -> None:
        self.screen = screen
        self._settings = settings
        #: The widget of the reply in flight (or the last one, until it ends).
        self.reply: AssistantMessage | None = None
        #: Events of the reply in flight that arrived while its widgets were still mounting.
        self._early: list[ReplyEvent] | None = None
        self._prompt_tokens = 0

    def stopping(self) -> None:
        """Say on the reply that it is being stopped."""
        if self.reply is not None:
            self.reply.set_footer("stopping…")

    async def start(self, messages: list[ChatMessage], kind: ReplyKind, text: str) -> None:
        """Ask the engine for the reply, then mount its widgets (``text``: a new user turn)."""
        # The engine is asked first, so the prompt's prefill runs while the widgets mount (which
        # takes a noticeable time); its events wait in `_early` until the reply's widget exists.
        screen = self.screen
        settings = self._settings()
        screen.saver.reply_started(kind, settings)
        try:
            request_id = screen.engine.generate(
                messages, settings, continue_last=kind == "continue"
            )
        except Exception as error:  # the engine refused the request: say so, stay usable
            await self._mount_reply(kind, text)
            screen.saver.failed("", str(error))
            if self.reply is not None:
                await self.reply.fail(str(error))
            self.reply = None
            screen.set_phase("ready")
            screen.notify(
                str(error), title="Could not start the reply", severity="error", markup=False
            )
            return
        screen.conversation.begin(request_id, kind)
        screen.refresh_bindings()
        self._early = []
        try:
            await self._mount_reply(kind, text)
        finally:
            early, self._early = self._early, None
        if self.reply is not None and screen.conversation.is_current(request_id):
            self.reply.set_footer("waiting for the model…")
        for event in early:
            self._apply(event)
        screen.view.scroll_end(animate=False)

    async def _mount_reply(self, kind: ReplyKind, text: str) -> None:
        """Show the user's message (a new turn) and the reply's widget, as ``self.reply``."""
        view = self.screen.view
        if kind == "new":
            await view.add_user(text)
        last = view.last_assistant()
        if kind == "regenerate" and last is not None:
            await last.remove()
        if kind == "continue" and last is not None:
            self.reply = last
        else:
            self.reply = await view.add_assistant()

    def _apply(self, event: ReplyEvent) -> None:
        if isinstance(event, ReplyStarted):
            self.started(event)
        elif isinstance(event, ReplyFinished):
            self.finished(event)
        else:
            self.failed(event)

    def _held(self, event: ReplyEvent) -> bool:
        """Keep ``event`` for later when its reply's widgets are still mounting."""
        if self._early is not None and self.screen.conversation.is_current(event.request_id):
            self._early.append(event)
            return True
        return False

    def started(self, event: ReplyStarted) -> None:
        """Start streaming the reply's text into its message."""
        screen = self.screen
        if self._held(event):
            return
        if not screen.conversation.is_current(event.request_id) or self.reply is None:
            return
        self._prompt_tokens = event.prompt_tokens
        self.reply.begin(event.stream)
        screen.saver.streaming(event.stream)
        screen.update_status(context_used=event.prompt_tokens, context_max=event.context_max)
        if event.dropped_messages:
            screen.notify(
                f"{event.dropped_messages} older message(s) left out to fit the context window.",
                severity="warning",
            )

    def progress(self, tokens_per_s: float | None, tokens: int) -> None:
        """A streamed batch was shown: save it and update the speed and context figures."""
        self.screen.saver.progress()
        self.screen.update_status(
            tokens_per_s=tokens_per_s, context_used=self._prompt_tokens + tokens
        )

    def finished(self, event: ReplyFinished) -> None:
        """Render the whole reply once and show its stats."""
        screen = self.screen
        if self._held(event) or not screen.conversation.is_current(event.request_id):
            return
        screen.conversation.finish(event.text, event.finish)
        screen.saver.finished(event)
        reply, self.reply = self.reply, None
        if reply is not None:
            reply.finish(event.text, format_footer(event.stats, event.finish))
        stats = event.stats
        screen.set_phase(
            "ready",
            tokens_per_s=stats.decode_tokens_per_s,
            context_used=stats.context_used,
            context_max=stats.context_max,
        )

    def failed(self, event: ReplyFailed) -> None:
        """Keep any partial text, mark the reply failed and tell the user once."""
        screen = self.screen
        if self._held(event) or not screen.conversation.is_current(event.request_id):
            return
        screen.conversation.fail()
        screen.saver.failed(event.partial_text, event.message)
        reply, self.reply = self.reply, None
        if reply is not None:
            reply.fail(event.message, event.partial_text)
        screen.set_phase("ready")
        screen.notify(
            error_text(event.message, event.hint),
            title="Reply failed",
            severity="error",
            markup=False,
        )
