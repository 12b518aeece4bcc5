"""What `mergechat serve` passed to the server it runs, so a client on the same machine knows
the precision and device the server really uses (neither vLLM nor `transformers serve` says).

One small JSON file in the cache dir (user-only, written atomically), one entry per port; an
entry whose server process is gone counts as absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import psutil

from mergechat.core.settings import json_cache, locations

#: Bumped when the entry format changes; entries of another version are ignored.
RECORD_VERSION: Final[int] = 1


def record_file() -> Path:
    """``<cache dir>/served.json``."""
    return locations.cache_dir() / "served.json"


def remember(port: int, entry: dict[str, Any]) -> None:
    """Record a started server (``entry`` holds at least its ``pid``) under its port."""
    path = record_file()
    entries = json_cache.read_entries(path, RECORD_VERSION)
    entries[str(port)] = entry
    json_cache.write_entries(path, RECORD_VERSION, entries)


def forget(port: int, pid: int) -> None:
    """Drop the port's entry if it is still this server's (another may have taken the port)."""
    path = record_file()
    entries = json_cache.read_entries(path, RECORD_VERSION)
    entry = entries.get(str(port))
    if isinstance(entry, dict) and entry.get("pid") == pid:
        del entries[str(port)]
        json_cache.write_entries(path, RECORD_VERSION, entries)


def lookup(port: int) -> dict[str, Any] | None:
    """What `mergechat serve` passed to the server on ``port`` of this machine, if it runs.

    Keys: ``engine``, ``dtype``, ``device``, ``model``, ``path``, ``host``, ``port``, ``pid``,
    ``url``.
    """
    entry = json_cache.read_entries(record_file(), RECORD_VERSION).get(str(port))
    if not isinstance(entry, dict):
        return None
    pid = entry.get("pid")
    if not isinstance(pid, int) or not psutil.pid_exists(pid):
        return None
    return entry
