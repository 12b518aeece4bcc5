"""`ConversationView`: the scrolling list of user and assistant messages; follows the bottom."""

from __future__ import annotations

from textual.app import RenderResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from mergechat.core.visible import escape_control
from mergechat.ui.widgets.assistant_message import AssistantMessage
from mergechat.ui.widgets.empty_hint import bound_keys, hint_text


class UserMessage(Static):
    """A user turn, shown as typed (no markup; control characters shown as ``\\uXXXX``)."""

    def __init__(self, text: str) -> None:
        super().__init__(
            escape_control(text, keep_lines=True), classes="user-message", markup=False
        )
        self.text = text


class ConversationView(VerticalScroll, can_focus=True):
    """Messages in order. Anchored: stays at the bottom until the user scrolls up."""

    def on_mount(self) -> None:
        self.anchor()

    def render(self) -> RenderResult:
        """While there are no messages, a hint of what to do (messages draw over it otherwise)."""
        return "" if self.children else hint_text(bound_keys(self.screen))

    async def add_user(self, text: str) -> UserMessage:
        """Append a user message."""
        message = UserMessage(text)
        await self.mount(message)
        return message

    async def add_assistant(self, text: str = "", footer: str = "") -> AssistantMessage:
        """Append an (empty, unless ``text``) assistant message."""
        message = AssistantMessage(text, footer=footer)
        await self.mount(message)
        return message

    def last_assistant(self) -> AssistantMessage | None:
        """The newest assistant message, if the conversation ends with one."""
        children = [c for c in self.children if isinstance(c, (UserMessage, AssistantMessage))]
        if children and isinstance(children[-1], AssistantMessage):
            return children[-1]
        return None

    async def clear(self) -> None:
        """Remove every message."""
        await self.remove_children()
