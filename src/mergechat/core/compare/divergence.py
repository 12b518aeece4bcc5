"""Where a reply first parts from the base model's: by token when both came from one tokenizer,
else by word; always with the character offset, so a view can mark the spot."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Unit = Literal["token", "word"]
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Divergence:
    """The first difference from the base reply; ``index`` None means the replies are equal."""

    unit: Unit
    #: The first differing token or word (0-based), None when identical.
    index: int | None
    #: Characters the two replies share before they part (None when identical).
    char_offset: int | None
    #: Tokens or words in this reply.
    length: int

    def describe(self) -> str:
        """``same as the base`` or ``parts from the base at word 12``."""
        if self.index is None:
            return f"same as the base ({self.length} {self.unit}s)"
        return f"parts from the base at {self.unit} {self.index + 1} of {self.length}"


def _first_difference(a: Sequence[object], b: Sequence[object]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def divergence(
    base_text: str,
    text: str,
    *,
    base_ids: Sequence[int] | None = None,
    ids: Sequence[int] | None = None,
) -> Divergence:
    """Compare ``text`` with ``base_text``: by token when both id lists are given (same
    tokenizer), else by whitespace-separated word."""
    char_offset = None if base_text == text else _first_difference(base_text, text)
    if base_ids is not None and ids is not None:
        return Divergence("token", _first_difference(base_ids, ids), char_offset, len(ids))
    words = _WORD.findall(text)
    index = _first_difference(_WORD.findall(base_text), words)
    if index is None and char_offset is not None:  # same words, other spacing
        index = len(_WORD.findall(text[:char_offset]))
    return Divergence("word", index, char_offset, len(words))
