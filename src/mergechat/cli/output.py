"""The one-line messages every command writes to stderr: ``mergechat: LEVEL: MESSAGE``.

Messages can hold paths and model text with escape sequences: they are shown, never acted on.
"""

from __future__ import annotations

import sys
from typing import TextIO

from mergechat.core.visible import escape_control


def one_line(text: str) -> str:
    """``text`` on one line (whitespace runs collapsed), control characters escaped."""
    return escape_control(" ".join(text.split()))


def warn(message: str, err: TextIO | None = None, *, level: str = "warning") -> None:
    """Write ``mergechat: warning: MESSAGE`` (one line) to stderr."""
    stream = err or sys.stderr
    stream.write(f"mergechat: {level}: {one_line(message)}\n")
    stream.flush()


def print_error(message: str, hint: str | None = None, *, err: TextIO | None = None) -> None:
    """Write ``mergechat: error: MESSAGE`` as one line, and the hint (if any) on a second line."""
    stream = err or sys.stderr
    if stream is None:  # stderr closed (2>&-): the exit code is all that can be said
        return
    stream.write(f"mergechat: error: {one_line(message)}\n")
    if hint:
        stream.write(f"  hint: {one_line(hint)}\n")
    stream.flush()
