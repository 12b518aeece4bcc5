"""The probe cache file: probe results per machine fingerprint, torch version and model shape.

Probing takes a few seconds; the cache makes every later start with the same model shape
read it at once. The file is JSON, written atomically; anything malformed counts as absent.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from mergechat.core.detect.capabilities import DeviceInfo, ProbeResult, Verdict
from mergechat.core.detect.probe_shape import ProbeShape
from mergechat.core.dtypes import DTYPES, normalize_dtype
from mergechat.core.settings import json_cache

log = logging.getLogger(__name__)

#: Bumped when the entry format changes; entries of another version are ignored.
CACHE_VERSION: Final[int] = 2
#: Entries kept (one per machine x torch x model shape); the oldest go first.
MAX_ENTRIES: Final[int] = 64


def machine_fingerprint(devices: Iterable[DeviceInfo], torch_version: str) -> str:
    """A stable key for the machine: device names, CPU flags, capabilities, torch version."""
    parts = [f"torch={torch_version}"]
    for d in devices:
        cc = ".".join(map(str, d.compute_capability)) if d.compute_capability else ""
        parts.append(f"{d.id}|{d.name}|{','.join(sorted(d.features))}|{cc}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def cache_key(devices: Iterable[DeviceInfo], torch_version: str, shape: ProbeShape) -> str:
    """The cache key of one probe: machine fingerprint, torch version and model shape."""
    return f"{machine_fingerprint(devices, torch_version)}:{shape.key()}"


def read_entries(path: Path) -> dict[str, Any]:
    """The cache file's entries; an unreadable or malformed file counts as empty."""
    return json_cache.read_entries(path, CACHE_VERSION)


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
                decode_s=_float_or_none(item["decode_s"]),
                prefill_s=_float_or_none(item["prefill_s"]),
                decode_factor=_float_or_none(item["decode_factor"]),
                prefill_factor=_float_or_none(item["prefill_factor"]),
                reliable=bool(item["reliable"]),
            )
        )
    if {(p.device, p.dtype) for p in probes} != {(d.id, t) for d in devices for t in DTYPES}:
        raise ValueError("the cached probes do not cover these devices")
    return tuple(probes)


def store_entry(
    path: Path,
    key: str,
    entry: dict[str, Any],
    *,
    devices: Iterable[DeviceInfo],
    torch_version: str,
) -> None:
    """Add one entry (re-reading the file: another process may have added its own)."""
    entries = read_entries(path)
    entries.pop(key, None)
    entries[key] = {
        **entry,
        "torch": torch_version,
        "devices": [f"{d.id}: {d.name}" for d in devices],
    }
    while len(entries) > MAX_ENTRIES:
        entries.pop(next(iter(entries)))
    write_entries(path, entries)


def write_entries(path: Path, entries: dict[str, Any]) -> None:
    """Write the cache atomically: a crash mid-write must not leave half a file."""
    json_cache.write_entries(path, CACHE_VERSION, entries)
