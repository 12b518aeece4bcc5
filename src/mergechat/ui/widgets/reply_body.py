"""`ReplyBody`: a reply's Markdown, cheap to stream into and rendered in full once at the end.

Textual's `Markdown` widget mounts a widget per block; while a reply streams, each new block
means a mount plus a layout pass over every widget on screen, which made typing lag
(BENCHMARKS.md). So a reply is drawn with Rich's Markdown renderer into a few
line-cached widgets: text that can no longer change (before a blank line outside a code fence)
is frozen in a chunk rendered once; only the short tail is re-rendered as tokens arrive.
`set_text` replaces the chunks with one widget holding the whole reply (the one full render);
long texts are rendered on a worker thread while the previous lines stay on screen.
"""

from __future__ import annotations

import io

from textual.await_complete import AwaitComplete
from textual.containers import Vertical
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

from mergechat.core.markdown_blocks import settled_length
from mergechat.core.visible import escape_control

#: A streaming tail longer than this is split at its last settled block boundary.
CHUNK_CHARS = 600
#: Texts longer than this are re-rendered off the UI thread (when older lines can stand in).
SYNC_CHARS = 2000
RenderKey = tuple[str, int, bool]


def render_markdown(source: str, width: int, dark: bool) -> list[Strip]:
    """Rich's rendering of ``source`` at ``width`` cells (safe to call on any thread).

    Control characters are shown as ``\\uXXXX``: Rich passes ESC through, and a reply's
    escape sequence would reach the terminal (clipboard, window title, clear screen).
    """
    from rich.console import Console
    from rich.markdown import Markdown

    console = Console(
        width=width,
        file=io.StringIO(),
        force_terminal=True,
        legacy_windows=False,
        highlight=False,
        emoji=False,
    )
    markdown = Markdown(
        escape_control(source, keep_lines=True),
        code_theme="ansi_dark" if dark else "ansi_light",
        hyperlinks=False,
    )
    lines = console.render_lines(markdown, console.options.update_width(width), pad=True)
    return [Strip(line, width) for line in lines]


class MarkdownText(Widget):
    """Markdown rendered by Rich (ANSI code colours: fine in 16-colour terminals).

    The rendered lines are cached per (text, width, theme): measuring the height and painting
    use one render, and a chunk that no longer changes is never rendered again.
    """

    DEFAULT_CSS = """
    MarkdownText { height: auto; }
    """

    def __init__(self, source: str = "") -> None:
        super().__init__(classes="markdown-text")
        self.source = source
        self._key: RenderKey | None = None
        self._strips: list[Strip] = []
        self._pending: RenderKey | None = None

    def set_source(self, source: str) -> None:
        """Show ``source`` instead; a layout pass only when the height changes."""
        if source == self.source:
            return
        width = self.content_size.width
        before = len(self._strips) if self._key is not None and self._key[1] == width else -1
        self.source = source
        # Most batches only lengthen the last line: a repaint is enough, and it skips the
        # layout pass over every widget on screen.
        same_height = width > 0 and before == len(self.rendered(width))
        self.refresh(layout=not same_height)

    def show_meanwhile(self, strips: list[Strip], width: int) -> None:
        """Lines to show until this widget's own render is ready (e.g. the streamed chunks)."""
        self._key = ("\0stale", width, self.app.current_theme.dark)
        self._strips = strips

    def rendered(self, width: int) -> list[Strip]:
        """The lines of the Markdown at ``width`` cells (cached)."""
        key = (self.source, width, self.app.current_theme.dark)
        if key == self._key:
            return self._strips
        if self._key is None or len(self.source) <= SYNC_CHARS:
            self._key, self._strips = key, render_markdown(*key)
        elif self._pending != key:
            self._pending = key
            self.run_worker(lambda: self._render_off_thread(key), thread=True, group="render")
        return self._strips

    def _render_off_thread(self, key: RenderKey) -> None:
        strips = render_markdown(*key)
        self.app.call_from_thread(self._rendered, key, strips)

    def _rendered(self, key: RenderKey, strips: list[Strip]) -> None:
        if self._pending == key:
            self._pending = None
        if key == (self.source, self.content_size.width, self.app.current_theme.dark):
            self._key, self._strips = key, strips
            self.refresh(layout=True)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.rendered(width)) if width > 0 and self.source else 0

    def render_line(self, y: int) -> Strip:
        width = self.content_size.width
        strips = self.rendered(width)
        base = self.visual_style.rich_style
        if y < len(strips):
            return strips[y].apply_style(base)
        return Strip.blank(width, base)


class ReplyBody(Vertical):
    """The text of a reply: `append` while streaming, `set_text` for the final render."""

    DEFAULT_CSS = """
    ReplyBody { height: auto; }
    """

    def __init__(self, text: str = "", *, classes: str | None = None) -> None:
        super().__init__(MarkdownText(text), classes=classes)
        self._frozen = ""

    @property
    def tail(self) -> MarkdownText:
        """The chunk that grows as text arrives."""
        return self.query_children(MarkdownText).last()

    @property
    def source(self) -> str:
        """All the text shown."""
        return self._frozen + self.tail.source

    def append(self, text: str) -> None:
        """Add streamed text; freeze the settled part of a long tail in its own chunk."""
        tail = self.tail
        source = tail.source + text
        # Only a finished line can add a blank line to settle at.
        settled = settled_length(source) if len(source) > CHUNK_CHARS and "\n" in text else 0
        if settled:
            tail.set_source(source[:settled].rstrip("\n"))
            self._frozen += source[:settled]
            self.mount(MarkdownText(source[settled:]))
        else:
            tail.set_source(source)

    def set_text(self, text: str) -> AwaitComplete:
        """Render ``text`` as one Markdown document (replacing the streaming chunks)."""
        chunks = list(self.query_children(MarkdownText))
        self._frozen = ""
        if len(chunks) == 1:
            chunks[0].set_source(text)
            return AwaitComplete(self._nothing())
        final = MarkdownText(text)
        width = chunks[0].content_size.width
        if len(text) > SYNC_CHARS and width > 0:
            final.show_meanwhile([s for c in chunks for s in c.rendered(width)], width)

        async def swap() -> None:
            await self.mount(final, before=chunks[0])
            await self.remove_children(chunks)

        return AwaitComplete(swap())

    @staticmethod
    async def _nothing() -> None:
        return None
