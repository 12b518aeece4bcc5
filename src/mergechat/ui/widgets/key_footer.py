"""`KeyFooter`: a compact footer that lists the keys a newcomer needs first.

Textual's footer lists the focused widget's keys, then the screen's, then the app's, so at 80
columns F1, F2 and ctrl+t fell off the right edge (or under the command palette key).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.events import Resize
from textual.widget import Widget
from textual.widgets import Footer

#: Actions in the order they are listed; any other action follows, in Textual's order.
FIRST: tuple[str, ...] = ("submit", "stop", "help", "settings", "precision", "quit")
#: Below this width the command palette key is left out (F1 lists it).
PALETTE_MIN_WIDTH = 100


class KeyFooter(Footer):
    """Compact, most needed keys first; the palette key only where there is room for it."""

    def __init__(self) -> None:
        super().__init__(compact=True)

    def compose(self) -> ComposeResult:
        wide = self.app.size.width >= PALETTE_MIN_WIDTH
        self.set_reactive(Footer.show_command_palette, wide)
        widgets: list[Widget] = list(super().compose())
        widgets.sort(key=_rank)  # stable: the rest keep Textual's order
        yield from widgets

    def on_resize(self, _event: Resize) -> None:
        if self.show_command_palette != (self.app.size.width >= PALETTE_MIN_WIDTH):
            self.call_after_refresh(self.recompose)


def _rank(widget: Widget) -> int:
    action = str(getattr(widget, "action", ""))
    return FIRST.index(action) if action in FIRST else len(FIRST)
