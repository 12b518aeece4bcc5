"""`CompareBoard`: the columns side by side, or as tabs on a narrow terminal; one column is the
focused one (the precision key acts on it), and it can be widened or shown alone.

The columns are never moved between containers (that would remount a streaming reply): tabs
mode shows a `Tabs` bar and only the focused column.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Tab, Tabs

from mergechat.core.compare.plan import CompareModel
from mergechat.core.visible import escape_control
from mergechat.ui.compare.column_view import CompareColumn, ReplyScroll

#: Below this many terminal columns the models are shown as tabs.
NARROW_WIDTH = 100


class CompareBoard(Vertical):
    """Lays the columns out; `current` is the focused column's index."""

    def __init__(self, models: Sequence[CompareModel]) -> None:
        super().__init__(id="board")
        self._models = list(models)
        self.current = 0
        self.narrow = False
        self.wide = False
        self.alone = False

    def compose(self) -> ComposeResult:
        yield Tabs(
            *(
                Tab(Content(escape_control(m.label)), id=f"tab-{i}")
                for i, m in enumerate(self._models)
            ),
            id="column-tabs",
        )
        with Horizontal(id="columns"):
            for index, model in enumerate(self._models):
                yield CompareColumn(index, model)

    def on_mount(self) -> None:
        self.narrow = self.app.size.width < NARROW_WIDTH
        self._apply()

    def on_resize(self, _event: events.Resize) -> None:
        self.set_narrow(self.app.size.width < NARROW_WIDTH)

    @property
    def columns(self) -> list[CompareColumn]:
        """Every column, in plan order."""
        return list(self.query(CompareColumn))

    def column(self, index: int) -> CompareColumn:
        """The column of model ``index``."""
        return self.query_one(f"#column-{index}", CompareColumn)

    @property
    def shown(self) -> list[int]:
        """The indexes of the columns on screen."""
        return [c.index for c in self.columns if c.display]

    def set_narrow(self, narrow: bool) -> None:
        """Tabs (True) or columns side by side (False)."""
        if narrow != self.narrow:
            self.narrow = narrow
            self._apply()

    def toggle_wide(self) -> bool:
        """Widen the focused column (or give it back its share); True when now widened."""
        self.wide = not self.wide
        self._apply()
        return self.wide

    def toggle_alone(self) -> bool:
        """Show only the focused column (or all again); True when now alone."""
        self.alone = not self.alone
        self._apply()
        return self.alone

    def select(self, index: int, *, focus: bool = False) -> None:
        """Make column ``index`` the focused one (``focus``: move the keyboard focus to it)."""
        self.current = index % len(self._models)
        self._apply()
        if focus:
            self.column(self.current).query_one(ReplyScroll).focus()

    def _apply(self) -> None:
        tabs = self.query_one(Tabs)
        tabs.display = self.narrow
        tab_id = f"tab-{self.current}"
        if tabs.active != tab_id:
            tabs.active = tab_id
        one = self.narrow or self.alone
        for column in self.columns:
            current = column.index == self.current
            column.display = current or not one
            column.set_class(current, "-current")
            column.set_class(current and self.wide and not one, "-wide")

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        event.stop()
        if event.tab.id is not None:
            index = int(event.tab.id.removeprefix("tab-"))
            if index != self.current:
                self.select(index)

    def on_reply_scroll_move(self, message: ReplyScroll.Move) -> None:
        message.stop()
        self.select(self.current + message.step, focus=True)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        column = event.widget.parent
        if (
            isinstance(event.widget, ReplyScroll)
            and isinstance(column, CompareColumn)
            and column.index != self.current
        ):
            self.select(column.index)
