"""Checks of what the command line was started with: its text arguments and its streams.

Each failing check is one clear error before anything is loaded or saved (no empty
conversation left in the history, no app spinning without a terminal).
"""

from __future__ import annotations

import argparse
import sys

from mergechat.core.errors import BadInputError, MergechatError


def text_argument(text: str) -> str:
    """An argparse ``type=`` for free text: bytes that are not UTF-8 (kept by Python as lone
    surrogates) are bad input, since neither the tokenizer nor the history can store them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(text[exc.start]) - 0xDC00
        what = f"byte 0x{byte:02x}" if 0x80 <= byte <= 0xFF else "a character"
        raise argparse.ArgumentTypeError(
            f"not valid UTF-8 text ({what} at position {exc.start + 1}); "
            "use a UTF-8 locale or convert the text (iconv -t UTF-8)"
        ) from None
    return text


def require_terminal() -> None:
    """Refuse to start the app unless it can read keys from and draw on a terminal (Textual
    reads stdin and draws on stderr); without one it would spin, unable to read a key."""
    for name, stream in (("standard input", sys.__stdin__), ("standard error", sys.__stderr__)):
        try:
            ok = stream is not None and stream.isatty()
        except (ValueError, OSError):  # closed
            ok = False
        if not ok:
            raise BadInputError(
                f"the app needs a terminal, but its {name} is not one",
                "run it in a terminal, or answer one prompt without the app: "
                "mergechat PATH --prompt TEXT",
            )


def closed_stdout_error() -> MergechatError | None:
    """The error for a run started with stdout closed (``>&-``), where every mode writes."""
    if sys.stdout is not None:
        return None
    return MergechatError(
        "standard output is closed, so nothing could be written",
        "redirect it instead of closing it (>/dev/null or >FILE)",
    )
