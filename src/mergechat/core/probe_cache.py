"""The probe cache file: probe results per machine fingerprint and torch version.

Probing takes about half a second; the cache makes every later start read it in well under a
millisecond. The file is JSON, written atomically, and anything malformed in it counts as absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from mergechat.core import locations
from mergechat.core.capabilities import DeviceInfo, ProbeResult, Verdict
from mergechat.core.dtypes import DTYPES, normalize_dtype

log = logging.getLogger(__name__)

#: Bumped when the entry format changes; entries of another version are ignored.
CACHE_VERSION: Final[int] = 1


def machine_fingerprint(devices: Iterable[DeviceInfo], torch_version: str) -> str:
    """A stable key for the probe cache: device names, CPU flags, capabilities, torch version."""
    parts = [f"torch={torch_version}"]
    for d in devices:
        cc = ".".join(map(str, d.compute_capability)) if d.compute_capability else ""
        parts.append(f"{d.id}|{d.name}|{','.join(sorted(d.features))}|{cc}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def read_entries(path: Path) -> dict[str, Any]:
    """The cache file's entries; an unreadable or malformed file counts as empty."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def probes_from_entry(entry: Any, devices: tuple[DeviceInfo, ...]) -> tuple[ProbeResult, ...]:
    """Rebuild cached probes; raises KeyError/TypeError/ValueError when the entry is malformed."""
    probes = []
    for item in entry["probes"]:
        dtype = normalize_dtype(item["dtype"])
        if dtype is None or item["verdict"] not in ("ok", "slow", "unsupported"):
            raise ValueError(f"bad cached probe {item!r}")
        verdict: Verdict = item["verdict"]
        error = item["error"]
        probes.append(
            ProbeResult(
                str(item["device"]),
                dtype,
                verdict,
                _float_or_none(item["seconds"]),
                _float_or_none(item["factor"]),
                None if error is None else str(error),
            )
        )
    if {(p.device, p.dtype) for p in probes} != {(d.id, t) for d in devices for t in DTYPES}:
        raise ValueError("the cached probes do not cover these devices")
    return tuple(probes)


def write_entries(path: Path, entries: dict[str, Any]) -> None:
    """Write the cache atomically: a crash mid-write must not leave half a file."""
    tmp: str | None = None
    try:
        locations.ensure_private_dir(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=".probes-", suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"version": CACHE_VERSION, "entries": entries}, fh, indent=1)
        os.replace(tmp, path)
    except OSError:
        log.warning("could not write the probe cache %s", path, exc_info=True)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
