"""Copying over SSH: pick a reply, a message or a code block, send it by OSC 52, and confirm."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from mergechat.core.api import ChatMessage
from mergechat.core.markdown_blocks import code_blocks
from mergechat.core.visible import escape_control

#: Some terminals drop OSC 52 sequences above about this many bytes of text.
LARGE_COPY_BYTES: Final = 100_000


@dataclass(frozen=True)
class CopyTarget:
    """Something that can be copied, with the label shown in the copy menu."""

    label: str
    text: str


def last_reply(messages: Sequence[ChatMessage]) -> str | None:
    """The text of the last assistant message that has any, or None."""
    return next(
        (m.content for m in reversed(messages) if m.role == "assistant" and m.content), None
    )


def copy_targets(text: str, what: str = "reply") -> list[CopyTarget]:
    """The whole message, then each of its code blocks, as copy-menu entries."""
    targets = [CopyTarget(f"The whole {what} ({len(text)} characters)", text)] if text else []
    for number, block in enumerate(code_blocks(text), start=1):
        lines = block.code.count("\n") + 1 if block.code else 0
        language = f"{block.language}, " if block.language else ""
        plural = "" if lines == 1 else "s"
        targets.append(
            CopyTarget(f"Code block {number} ({language}{lines} line{plural})", block.code)
        )
    return targets


def message_targets(messages: Sequence[ChatMessage], preview: int = 50) -> list[CopyTarget]:
    """One entry per message with text, newest first, labelled with its role and opening words."""
    names = {"user": "You", "assistant": "Assistant", "system": "System"}
    targets = []
    for message in reversed(messages):
        text = escape_control(" ".join(message.content.split()))
        if text:
            short = text if len(text) <= preview else text[: preview - 1] + "…"
            targets.append(CopyTarget(f"{names[message.role]}: {short}", message.content))
    return targets


def copy_text(app: App[Any], text: str, what: str = "text") -> bool:
    """Send ``text`` to the terminal clipboard (OSC 52: works over SSH) and notify; True if sent.

    The terminal must allow OSC 52 (tmux: ``set -g set-clipboard on``).
    """
    if not text:
        app.notify("Nothing to copy.", severity="warning")
        return False
    app.copy_to_clipboard(text)
    size = len(text.encode("utf-8"))
    note = " It may be too long for some terminals." if size > LARGE_COPY_BYTES else ""
    app.notify(f"Copied {what} ({len(text)} characters) to the clipboard.{note}", markup=False)
    return True


class CopyMenu(ModalScreen[CopyTarget | None]):
    """Choose what to copy (digits 1-9 or arrows + Enter); Escape cancels."""

    DEFAULT_CSS = """
    CopyMenu { align: center middle; }
    CopyMenu > Vertical {
        width: 70; max-width: 90%; height: auto; max-height: 80%;
        border: round $accent; padding: 0 1; background: $surface;
    }
    CopyMenu OptionList { height: auto; max-height: 20; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="copy_cancel"),
        *[Binding(str(n), f"pick({n - 1})", show=False) for n in range(1, 10)],
    ]

    def __init__(self, targets: Sequence[CopyTarget], title: str = "Copy") -> None:
        """Offer ``targets`` (at most nine get digit shortcuts)."""
        super().__init__()
        self.targets = list(targets)
        self.heading = title

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"{self.heading}: 1-9, or arrows and Enter; Esc cancels", markup=False)
            yield OptionList(
                *[
                    Option(f"{n}. {t.label}" if n <= 9 else t.label, id=str(n - 1))
                    for n, t in enumerate(self.targets, start=1)
                ],
                markup=False,
            )

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_pick(event.option_index)

    def action_pick(self, index: int) -> None:
        """Copy target number ``index`` (0-based), if it exists."""
        if 0 <= index < len(self.targets):
            self.dismiss(self.targets[index])

    def action_cancel(self) -> None:
        """Close without copying."""
        self.dismiss(None)
