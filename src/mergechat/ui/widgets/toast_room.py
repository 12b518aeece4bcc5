"""Keep a screen's notices (Textual toasts) above a widget and everything below it.

Textual docks toasts to the screen's bottom right, so on a small terminal they hid the prompt and
the status bar. The rack's bottom margin follows the widget after every layout (the prompt grows
as lines are typed).
"""

from __future__ import annotations

from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widget import Widget

#: Textual's id for the container of a screen's toasts.
TOAST_RACK_ID = "textual-toastrack"


def keep_toasts_above(widget: Widget) -> None:
    """From now on, the toasts of ``widget``'s screen sit above ``widget``."""

    def place(screen: Screen[object]) -> None:
        if not widget.is_attached or widget.screen is not screen:
            return
        try:
            rack = screen.get_child_by_id(TOAST_RACK_ID)
        except NoMatches:
            return  # notifications disabled
        below = max(0, screen.size.height - widget.region.y)
        if widget.region.height and rack.styles.margin.bottom != below:
            rack.styles.margin = (0, 0, below, 0)

    widget.screen.screen_layout_refresh_signal.subscribe(widget, place)
