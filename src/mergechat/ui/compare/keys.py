"""The compare view's keys, each with an id for ``[keymap]``; the shared actions keep the chat's
ids (help, precision, stop, regenerate, quit), so one keymap entry moves both."""

from __future__ import annotations

from typing import Final

from textual.binding import Binding

#: App-wide keys of the compare view (F-keys and ctrl keys: the prompt keeps every letter).
COMPARE_BINDINGS: Final[list[Binding]] = [
    Binding("f1", "help", "Help", id="help"),
    Binding("escape", "stop", "Stop all", id="stop"),
    Binding("ctrl+r", "regenerate", "Regenerate all", id="regenerate"),
    Binding("ctrl+t,f3", "precision", "Precision", id="precision"),
    Binding("f5", "widen", "Widen", id="compare.widen"),
    Binding("f6", "alone", "Alone", id="compare.alone"),
    Binding("f7", "all_float32", "All columns to float32", show=False, id="compare.all_float32"),
    Binding("f8", "same_precision", "Same precision for all on/off", show=False, id="compare.same"),
    Binding(
        "ctrl+p", "command_palette", "Commands", show=False, priority=True, id="command_palette"
    ),
    Binding("ctrl+q", "quit", "Quit", priority=True, id="quit"),
]

#: What the help says for a key whose footer label is short.
HELP_TEXT: Final[dict[str, str]] = {
    "precision": "Precision of the focused column",
    "compare.widen": "Widen the focused column (again: its share back)",
    "compare.alone": "Show the focused column alone (again: every column)",
}

#: Keys of a focused column's reply.
COLUMN_BINDINGS: Final[list[Binding]] = [
    Binding("left", "previous_column", "Focus the previous column", show=False, id="compare.left"),
    Binding("right", "next_column", "Focus the next column", show=False, id="compare.right"),
]

#: Keys Textual gives every app (not bindings of ours), listed in the help too.
FIXED_ROWS: Final[list[tuple[str, str]]] = [
    ("enter", "Send the prompt to every model"),
    ("tab, shift+tab", "Move the focus: the prompt, then each column"),
    ("up, down, pgup, pgdn", "In a column: scroll its reply"),
]


def compare_ids() -> set[str]:
    """Every binding id of the compare view (a ``[keymap]`` entry may name any of them)."""
    return {b.id for b in (*COMPARE_BINDINGS, *COLUMN_BINDINGS) if b.id}
