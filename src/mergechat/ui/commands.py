"""The command palette's provider: every app action by name (send, stop, precision, theme ...)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from mergechat.core.dtypes import DTYPES
from mergechat.ui.protocols import PaletteHost


@dataclass(frozen=True)
class PaletteCommand:
    """One palette entry."""

    name: str
    help: str
    callback: Callable[[], Any]


def palette_commands(app: PaletteHost) -> list[PaletteCommand]:
    """Every action the palette offers, in discovery order."""
    chat = app.chat
    commands = [
        PaletteCommand("Send", "Send the text in the prompt", chat.action_send),
        PaletteCommand("Stop reply", "Stop the reply that is streaming", chat.action_stop),
        PaletteCommand(
            "Regenerate", "Drop the last reply and generate it again", chat.action_regenerate
        ),
        PaletteCommand(
            "Continue reply",
            "Continue a reply cut off by max_new_tokens or a stop",
            chat.action_continue_reply,
        ),
        PaletteCommand("New chat", "Clear the conversation", chat.action_new_chat),
        PaletteCommand(
            "Conversations",
            "Saved conversations: open, rename or delete them",
            app.action_conversations,
        ),
        PaletteCommand(
            "Copy last reply", "Copy the last reply to the clipboard", chat.action_copy_last
        ),
        PaletteCommand(
            "Copy a message or code block",
            "Choose a message, or a code block in it, to copy",
            chat.action_copy_menu,
        ),
        PaletteCommand(
            "Export conversation as Markdown",
            "Write it to the documents folder, with each reply's model and settings",
            partial(chat.action_export, "md"),
        ),
        PaletteCommand(
            "Export conversation as JSON",
            "Write everything stored about it to the documents folder",
            partial(chat.action_export, "json"),
        ),
        PaletteCommand(
            "Export conversation to a file…",
            "Choose the file (.json for JSON, otherwise Markdown)",
            chat.action_export,
        ),
        PaletteCommand(
            "Settings", "Model, device, precision and generation settings", app.action_settings
        ),
        PaletteCommand(
            "Precision menu", "Choose the precision the weights run in", app.action_precision
        ),
    ]
    commands += [
        PaletteCommand(
            f"Precision: {dtype}",
            f"Switch the loaded model to {dtype}",
            partial(app.switch_precision, dtype),
        )
        for dtype in DTYPES
    ]
    commands += [
        PaletteCommand("Theme", "Choose a colour theme", app.action_change_theme),
        PaletteCommand("Help", "Show every key", app.action_help),
        PaletteCommand("Quit", "Quit mergechat", app.action_quit),
    ]
    return commands


class MergechatCommands(Provider):
    """Offers `palette_commands`; fuzzy-matched on the command name."""

    def _commands(self) -> list[PaletteCommand]:
        return palette_commands(cast(PaletteHost, self.app))

    async def discover(self) -> Hits:
        for command in self._commands():
            yield DiscoveryHit(command.name, command.callback, help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands():
            score = matcher.match(command.name)
            if score > 0:
                yield Hit(
                    score, matcher.highlight(command.name), command.callback, help=command.help
                )
