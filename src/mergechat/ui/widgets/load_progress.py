"""`LoadProgress`: a progress bar with the load stage and detail, shown only while loading."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar


class LoadProgress(Horizontal):
    """Stage label plus bar; hidden (``display: none``) unless a load is running."""

    DEFAULT_CSS = """
    LoadProgress { height: 1; display: none; }
    LoadProgress.-active { display: block; }
    LoadProgress > Label { width: 1fr; }
    LoadProgress > ProgressBar { width: auto; }
    """

    def compose(self) -> ComposeResult:
        yield Label("", id="load-stage", markup=False)
        yield ProgressBar(total=100, show_eta=False, id="load-bar")

    @property
    def active(self) -> bool:
        """True while shown."""
        return self.has_class("-active")

    @property
    def stage_text(self) -> str:
        """The stage and detail line as shown."""
        return str(self.query_one("#load-stage", Label).content)

    def show_progress(self, stage: str, fraction: float, detail: str = "") -> None:
        """Show ``stage`` (and ``detail``) at ``fraction`` (0..1) of the whole load."""
        self.add_class("-active")
        text = f"{stage}: {detail}" if detail else stage
        self.query_one("#load-stage", Label).update(text)
        self.query_one("#load-bar", ProgressBar).update(progress=max(0.0, min(fraction, 1.0)) * 100)

    def hide(self) -> None:
        """Hide the bar (load finished or failed)."""
        self.remove_class("-active")
