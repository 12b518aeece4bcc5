"""The one byte-size formatter used by doctor, verdicts, load progress and error messages."""

from __future__ import annotations

import pytest

from mergechat.core.text import byte_unit, format_bytes

GIB = 1024**3


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (300 * 1024**2, "300.0 MiB"),
        (int(9.1 * GIB), "9.1 GiB"),
        (4096 * GIB, "4096.0 GiB"),  # no TiB: sizes compare at a glance with free memory
    ],
)
def test_format_bytes(size: int, shown: str) -> None:
    assert format_bytes(size) == shown


def test_byte_unit_picks_the_largest_unit_below_the_size() -> None:
    assert byte_unit(2 * GIB) == ("GiB", GIB)
    assert byte_unit(GIB - 1) == ("MiB", 1024**2)
    assert byte_unit(10) == ("B", 1)
