"""Small versioned JSON cache files (probes, fidelity, hints): read leniently, written atomically.

A cache is never worth a crash: anything unreadable or of another version counts as empty, and a
failed write only logs. Files are user-only (mkstemp creates them 0600).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from mergechat.core.settings import locations

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
    tmp: str | None = None
    try:
        locations.ensure_private_dir(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"version": version, "entries": entries}, fh, indent=1)
        os.replace(tmp, path)
    except OSError:
        log.warning("could not write the cache file %s", path, exc_info=True)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
