"""Numbers as people read them in messages, tables and progress lines (sizes in binary units)."""

from __future__ import annotations

from typing import Final

_UNITS: Final = ("B", "KiB", "MiB", "GiB")


def byte_unit(size: float) -> tuple[str, int]:
    """The unit ``size`` reads best in (B up to GiB, never above) and its size in bytes."""
    for power, unit in enumerate(_UNITS):
        if size < 1024 ** (power + 1) or unit == _UNITS[-1]:
            return unit, 1024**power
    raise AssertionError("unreachable")


def format_bytes(size: float) -> str:
    """``512 B``, ``1.5 KiB``, ``300.0 MiB``, ``9.1 GiB`` (GiB above that: ``4096.0 GiB``)."""
    unit, scale = byte_unit(size)
    return f"{size:.0f} B" if unit == "B" else f"{size / scale:.1f} {unit}"
