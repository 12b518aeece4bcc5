"""What the compare view lets a user discover: its command palette entries and its F1 rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, cast

from mergechat.ui.bindings import binding_keys
from mergechat.ui.commands import MergechatCommands, PaletteCommand
from mergechat.ui.compare.keys import COLUMN_BINDINGS, COMPARE_BINDINGS, FIXED_ROWS, HELP_TEXT


class CompareHost(Protocol):
    """The compare app's actions (a protocol: importing the app here would be a cycle)."""

    def action_stop(self) -> None: ...
    def action_regenerate(self) -> None: ...
    def action_precision(self) -> None: ...
    def action_all_float32(self) -> None: ...
    def action_same_precision(self) -> None: ...
    def action_widen(self) -> None: ...
    def action_alone(self) -> None: ...
    def action_change_theme(self) -> None: ...
    def action_help(self) -> None: ...
    async def action_quit(self) -> None: ...


def compare_commands(app: CompareHost) -> list[PaletteCommand]:
    """Every compare action the palette offers, in discovery order."""
    return [
        PaletteCommand("Stop all", "Stop every model's answer", app.action_stop),
        PaletteCommand(
            "Regenerate all", "Ask every model the same prompt again", app.action_regenerate
        ),
        PaletteCommand(
            "Precision of the focused column", "Switch that model's precision", app.action_precision
        ),
        PaletteCommand(
            "All columns to float32", "Switch every local model to float32", app.action_all_float32
        ),
        PaletteCommand(
            "Same precision for all on/off",
            "One precision every model runs well (fair for greedy replies); "
            "changing it places the models again",
            app.action_same_precision,
        ),
        PaletteCommand("Widen the focused column", "Or give it back its share", app.action_widen),
        PaletteCommand("Show the focused column alone", "Or every column again", app.action_alone),
        PaletteCommand("Theme", "Choose a colour theme", app.action_change_theme),
        PaletteCommand("Help", "Show every key", app.action_help),
        PaletteCommand("Quit", "Quit mergechat compare", app.action_quit),
    ]


class CompareCommands(MergechatCommands):
    """The palette provider of the compare view."""

    def _commands(self) -> list[PaletteCommand]:
        return compare_commands(cast(CompareHost, self.app))


def compare_help_rows(keymap: Mapping[str, str]) -> list[tuple[str, str]]:
    """(keys, description) of every compare key, with the user's keymap applied."""
    rows = [FIXED_ROWS[0]]
    rows += [
        (binding_keys(b, keymap), HELP_TEXT.get(b.id or "", b.description))
        for b in COMPARE_BINDINGS
    ]
    rows += FIXED_ROWS[1:]
    rows += [(binding_keys(b, keymap), f"In a column: {b.description}") for b in COLUMN_BINDINGS]
    return rows
