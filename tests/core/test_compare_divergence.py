"""`divergence`: where a reply first parts from the base model's reply."""

from __future__ import annotations

from mergechat.core.compare.divergence import divergence


def test_identical_replies_do_not_diverge() -> None:
    found = divergence("the same words", "the same words", base_ids=[1, 2, 3], ids=[1, 2, 3])
    assert (found.unit, found.index, found.char_offset) == ("token", None, None)
    assert found.describe() == "same as the base (3 tokens)"


def test_tokens_are_compared_when_both_id_lists_are_given() -> None:
    found = divergence("ab cd", "ab ce", base_ids=[5, 6, 7], ids=[5, 6, 9, 10])
    assert (found.unit, found.index, found.char_offset, found.length) == ("token", 2, 4, 4)


def test_words_are_compared_without_ids() -> None:
    found = divergence("one two three", "one two four five")
    assert (found.unit, found.index, found.char_offset) == ("word", 2, 8)
    assert found.describe() == "parts from the base at word 3 of 4"


def test_a_longer_reply_diverges_where_the_shorter_ends() -> None:
    assert divergence("one two", "one two three").index == 2
    assert divergence("one two three", "one").index == 1
