"""Path completion for an `Input`: the rest of the first file or folder the typed text starts."""

from __future__ import annotations

import asyncio
import os

from textual.suggester import Suggester


def complete_path(value: str) -> str | None:
    """``value`` extended to the first entry (by name) it starts; folders end in "/".

    Hidden entries are offered only once a "." is typed. None when nothing matches.
    """
    if not value:
        return None
    folder, prefix = os.path.split(os.path.expanduser(value))
    try:
        with os.scandir(folder or ".") as entries:
            names = sorted(
                (e.name, e.is_dir())
                for e in entries
                if e.name.startswith(prefix) and (prefix.startswith(".") or e.name[0] != ".")
            )
    except OSError:
        return None
    for name, is_dir in names:
        rest = name[len(prefix) :] + ("/" if is_dir else "")
        if rest:
            return value + rest
    return None


class PathSuggester(Suggester):
    """Suggests the rest of a path as the person types (→ or End accepts it)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        # A slow (network) file system must not stall the UI: list folders off the event loop.
        return await asyncio.to_thread(complete_path, value)
