"""Small versioned JSON cache files (probes, fidelity, hints): read leniently, written atomically.

A cache is never worth a crash: anything unreadable or of another version counts as empty, and a
failed write only logs. Files are user-only (0600).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mergechat.core.settings import locations
from mergechat.core.settings.atomic import atomic_write

log = logging.getLogger(__name__)


def read_entries(path: Path, version: int) -> dict[str, Any]:
    """The file's ``entries``; an unreadable, malformed or other-version file counts as empty."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != version:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def write_entries(path: Path, version: int, entries: dict[str, Any]) -> None:
    """Write ``{"version", "entries"}`` atomically: a crash mid-write never leaves half a file."""
    data = json.dumps({"version": version, "entries": entries}, indent=1)
    try:
        locations.ensure_private_dir(path.parent)
        atomic_write(path, data.encode("utf-8"))
    except OSError:
        log.warning("could not write the cache file %s", path, exc_info=True)
