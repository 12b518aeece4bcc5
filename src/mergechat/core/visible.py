"""Make control characters visible, so text from a model, a prompt or a file is shown as text.

A terminal acts on escape sequences (OSC 52 writes the clipboard, OSC 0 sets the window title,
``ESC[2J`` clears the screen); every text mergechat did not write itself goes through
`escape_control` before it reaches a terminal or a terminal UI.
"""

from __future__ import annotations

import re
from typing import Final

# C0 controls, DEL and the C1 controls (U+009B is a one-character CSI on some terminals).
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The same, keeping newlines, tabs and the CR of a CRLF (a lone CR could overwrite a line).
_CONTROL_BUT_LINES: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")


def _visible(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def escape_control(text: str, *, keep_lines: bool = False) -> str:
    """``text`` with control characters written as ``\\uXXXX`` (newlines and tabs kept when
    ``keep_lines``): shown as data, never acted on by a terminal or renderer."""
    return (_CONTROL_BUT_LINES if keep_lines else _CONTROL).sub(_visible, text)


class VisibleStream:
    """Escapes streamed text piece by piece; a CR at the end of a piece waits for the next one
    (it is kept only as part of a CRLF)."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        """The escaped form of ``text`` (what can be written now)."""
        text = self._held + text
        self._held = "\r" if text.endswith("\r") else ""
        if self._held:
            text = text[:-1]
        return escape_control(text, keep_lines=True)

    def flush(self) -> str:
        """What is still held back, escaped (at the end of the stream)."""
        held, self._held = self._held, ""
        return escape_control(held, keep_lines=True)


def shown_path(path: object) -> str:
    """A path as a reader can trust it: quoted and escaped like ``repr`` when it holds a control
    character (a trailing newline), an undecodable byte or spaces at either end."""
    text = str(path)
    return repr(text) if not text.isprintable() or text != text.strip() else text
