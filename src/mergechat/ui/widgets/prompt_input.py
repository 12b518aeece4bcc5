"""`PromptInput`: multi-line prompt editor; Enter sends, ctrl+j adds a newline, up/down recall."""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import TextArea

from mergechat.ui.widgets.toast_room import keep_toasts_above


class PromptInput(TextArea):
    """A `TextArea` that submits on Enter and recalls earlier prompts with up/down.

    Newline keys: ctrl+j is what every terminal delivers; alt+enter and shift+enter work only where
    the terminal reports them (kitty keyboard protocol); a legacy terminal's alt+enter arrives as a
    plain Enter.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "submit", "Send", priority=True, id="send"),
        Binding(
            "ctrl+j,alt+enter,shift+enter",
            "newline",
            "Newline",
            show=False,
            priority=True,
            id="newline",
            key_display="ctrl+j",
        ),
    ]

    class Submitted(Message):
        """The user pressed the send key with this text."""

        def __init__(self, prompt: PromptInput, text: str) -> None:
            super().__init__()
            self.prompt = prompt
            self.text = text

        @property
        def control(self) -> PromptInput:
            """The input that sent it."""
            return self.prompt

    def __init__(self, *, id: str | None = None, placeholder: str = "") -> None:
        super().__init__(
            id=id,
            soft_wrap=True,
            tab_behavior="focus",
            show_line_numbers=False,
            compact=True,
            highlight_cursor_line=False,
            placeholder=placeholder,
        )
        self.prompt_history: list[str] = []
        # Position in `history` while recalling (len(history) = not recalling) and the draft typed
        # before recall started, restored when the user walks past the newest entry.
        self._history_index = 0
        self._draft = ""

    def on_mount(self) -> None:
        keep_toasts_above(self)  # notices never hide what is being typed

    def action_submit(self) -> None:
        """Post `Submitted` with the current text (the screen decides whether to accept it)."""
        self.post_message(self.Submitted(self, self.text))

    def action_newline(self) -> None:
        """Insert a newline at the cursor."""
        start, end = self.selection
        self.replace("\n", start, end)

    def accept(self) -> None:
        """The text was sent: remember it for recall and clear the input."""
        text = self.text
        if text.strip() and (not self.prompt_history or self.prompt_history[-1] != text):
            self.prompt_history.append(text)
        self._history_index = len(self.prompt_history)
        self._draft = ""
        self.clear()

    async def _on_key(self, event: events.Key) -> None:
        # Runs before TextArea's own handler and before the up/down cursor bindings.
        if event.key == "up" and self._can_recall_older():
            self._recall(self._history_index - 1)
        elif event.key == "down" and self._can_recall_newer():
            self._recall(self._history_index + 1)
        else:
            return
        event.stop()
        event.prevent_default()

    def _can_recall_older(self) -> bool:
        if self._history_index > len(self.prompt_history):
            self._history_index = len(self.prompt_history)
        first_line = self.cursor_location[0] == 0
        return self._history_index > 0 and (not self.text or first_line)

    def _can_recall_newer(self) -> bool:
        last_line = self.cursor_location[0] == self.document.line_count - 1
        return self._history_index < len(self.prompt_history) and last_line

    def _recall(self, index: int) -> None:
        if self._history_index == len(self.prompt_history):
            self._draft = self.text
        self._history_index = index
        text = self.prompt_history[index] if index < len(self.prompt_history) else self._draft
        self.load_text(text)
        self.move_cursor(self.document.end)
