"""Code blocks in a reply's Markdown, found by markdown-it-py with the rules Rich renders with, so
the blocks copied, the streaming chunk boundaries and the export all agree with what is shown."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

#: A line appended after a message to see whether a code block left open would swallow it.
_SENTINEL: Final = "mergechat-end-of-message-sentinel"
_CODE_TOKENS: Final = ("fence", "code_block")


@dataclass(frozen=True)
class CodeBlock:
    """A code block: its language (info string's first word, may be "") and its code."""

    language: str
    code: str


@functools.cache
def _parser() -> MarkdownIt:
    # Rich's Markdown parser (CommonMark, tables, strikethrough); only blocks matter here.
    # Imported on first use: the app's first paint does not wait for it.
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).disable("inline")


def _code_tokens(markdown: str) -> list[Token]:
    return [t for t in _parser().parse(markdown) if t.type in _CODE_TOKENS]


def code_blocks(markdown: str) -> list[CodeBlock]:
    """The code blocks of ``markdown`` in order: fenced (``` or ~~~, also in lists and quotes)
    and indented. An unclosed fence (a reply still streaming, or cut off) runs to the end."""
    blocks = []
    for token in _code_tokens(markdown):
        info = token.info.strip()
        code = token.content.removesuffix("\n")
        blocks.append(CodeBlock(info.split()[0] if info else "", code))
    return blocks


def settled_length(text: str) -> int:
    """Length of the longest prefix of ``text`` ending at a blank line outside any code block."""
    inside: set[int] = set()
    for token in _code_tokens(text):
        if token.map is not None:
            inside.update(range(*token.map))
    settled = offset = 0
    for number, line in enumerate(text.splitlines(keepends=True)):
        if not line.strip() and offset > 0 and number not in inside:
            settled = offset + len(line)
        offset += len(line)
    return settled


def close_open_fence(text: str) -> str:
    """``text`` with a closing fence added when a code block is left open (a cut-off reply),
    so what follows it in a document is not swallowed by it."""
    for token in _parser().parse(f"{text}\n\n{_SENTINEL}"):
        if token.type == "fence" and _SENTINEL in token.content:
            return f"{text}\n{token.markup}"
    return text
