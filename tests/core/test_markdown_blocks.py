"""One code-block reader (markdown-it-py, as Rich parses) for copying, streaming and export."""

from __future__ import annotations

from markdown_it import MarkdownIt

from mergechat.core.markdown_blocks import (
    CodeBlock,
    close_open_fence,
    code_blocks,
    settled_length,
)


def test_blocks_in_quotes_and_indented_code_are_copyable_as_shown() -> None:
    assert code_blocks("> ```sh\n> ls -l\n> ```\n") == [CodeBlock("sh", "ls -l")]
    assert code_blocks("Run:\n\n    make test\n\ndone") == [CodeBlock("", "make test")]
    # Inline code with triple backticks is not a block.
    assert code_blocks("Inline ```not a fence``` here") == []


def test_streaming_never_settles_inside_a_longer_fence() -> None:
    # The inner ```py line does not close the outer ```` fence, so its blank line is code.
    text = "````md\n```py\n\nx\n```\n````\n"
    assert settled_length(text) == 0
    assert settled_length(text + "\nafter\n\nmore") == len(text + "\nafter\n\n")


def test_an_open_fence_in_a_list_is_not_closed_into_a_new_block() -> None:
    # The unindented text after it ends the list item and the fence; a ``` at column 0 would
    # instead open a new block that swallows the rest of the exported document.
    text = "- item\n\n  ```py\n  code"
    assert close_open_fence(text) == text
    document = close_open_fence(text) + "\n\n## You"
    fences = [t for t in MarkdownIt().parse(document) if t.type == "fence"]
    assert all("## You" not in t.content for t in fences)


def test_an_open_top_level_fence_gets_its_own_marks() -> None:
    assert close_open_fence("~~~~\ncode") == "~~~~\ncode\n~~~~"
    closed = "a\n```\nb\n```"
    assert close_open_fence(closed) == closed
