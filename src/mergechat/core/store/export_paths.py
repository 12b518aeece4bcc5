"""Where an export goes without overwriting: the first free ``name-2.md``, ``name-3.md``..."""

from __future__ import annotations

import itertools
import os
from pathlib import Path


def free_path(path: Path) -> Path:
    """``path`` when nothing is there yet, else the first free ``name-2.md``, ``name-3.md``..."""
    if not os.path.lexists(path):
        return path
    for number in itertools.count(2):
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        if not os.path.lexists(candidate):
            return candidate
    raise AssertionError("unreachable")
