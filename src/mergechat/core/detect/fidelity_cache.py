"""The results of ``doctor --fidelity`` and their cache, so the detector knows float16's safety.

Torch-free: `float16_safety` is cheap enough for the policy to call on every assessment. The
cache is JSON in the user cache dir, written atomically (mode 0600); anything malformed in it
counts as absent.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from mergechat.core.dtypes import DType
from mergechat.core.model.info import ModelInfo
from mergechat.core.settings import json_cache, locations

log = logging.getLogger(__name__)

#: Bumped when the entry format changes; entries of another version are ignored.
CACHE_VERSION: Final[int] = 1
#: The cache keeps this many models (the most recently audited ones).
MAX_ENTRIES: Final[int] = 64


@dataclass(frozen=True)
class Float16Safety:
    """Whether float16 can hold this model's values, as measured by ``doctor --fidelity``."""

    #: True when float16 ran finite and every weight and activation stayed below half of 65504.
    safe: bool
    #: One line for the user, e.g. ``float16 holds this bfloat16 model comfortably (...)``.
    reason: str
    #: The tensor or layer closest to (or past) float16's limit, e.g. ``model.layers.7.mlp``.
    worst_name: str | None
    #: Its largest magnitude (``inf`` when float16 overflowed there and float32 did too).
    worst_value: float | None


@dataclass(frozen=True)
class FidelityRow:
    """One device x dtype run of the audit text, compared with float32."""

    device: str
    dtype: DType
    #: No NaN/inf in the logits or any hidden state (None when not measured: see ``error``).
    finite: bool | None = None
    #: Fraction (0..1) of positions whose top-1 next token matches the float32 reference.
    top1_agreement: float | None = None
    #: Largest absolute logit difference against the reference (``inf`` when not finite).
    max_logit_diff: float | None = None
    #: Weights or this run's activations exceed 32752 (half of float16's 65504) or overflowed.
    near_float16_limit: bool | None = None
    largest_weight: float | None = None
    largest_weight_name: str | None = None
    #: Largest magnitude of any module's output (or a leaf module's input) in this run.
    largest_activation: float | None = None
    largest_activation_layer: str | None = None
    #: The first module (in execution order) whose output held inf or NaN.
    first_nonfinite_layer: str | None = None
    #: What this row was compared with, e.g. ``cpu float32``.
    reference: str | None = None
    seconds: float | None = None
    #: Why this row was not measured (an unsupported dtype, a load error, too little memory).
    error: str | None = None


def rows_to_json(rows: tuple[FidelityRow, ...]) -> list[dict[str, Any]]:
    """Rows as strict JSON data: inf/NaN become null (``finite`` false says why)."""
    out = []
    for row in rows:
        data = asdict(row)
        for key, value in data.items():
            if isinstance(value, float) and not math.isfinite(value):
                data[key] = None
        out.append(data)
    return out


def cache_file() -> Path:
    """``<cache dir>/fidelity.json``."""
    return locations.cache_dir() / "fidelity.json"


def model_key(info: ModelInfo) -> str | None:
    """A key that changes when the model's files or torch change; None when a file is unreadable.

    Built from the resolved path, each weight file's name, size and mtime, and torch's version
    (read from package metadata: no torch import).
    """
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "none"
    parts = [str(Path(info.path).resolve()), f"torch={torch_version}"]
    try:
        for file in info.weight_files:
            stat = file.stat()
            parts.append(f"{file.name}|{stat.st_size}|{stat.st_mtime_ns}")
    except OSError:
        return None
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _read_entries(path: Path) -> dict[str, Any]:
    return json_cache.read_entries(path, CACHE_VERSION)


def _write_entries(path: Path, entries: dict[str, Any]) -> None:
    json_cache.write_entries(path, CACHE_VERSION, entries)


def remember(info: ModelInfo, safety: Float16Safety, rows: tuple[FidelityRow, ...]) -> None:
    """Store an audit's verdict (and rows) for ``info``; later `float16_safety` calls read it."""
    key = model_key(info)
    if key is None:
        return
    path = cache_file()
    entries = _read_entries(path)
    entries.pop(key, None)
    entries[key] = {
        "path": str(info.path),
        "safety": asdict(safety),
        "rows": rows_to_json(rows),
    }
    while len(entries) > MAX_ENTRIES:
        entries.pop(next(iter(entries)))
    _write_entries(path, entries)


def float16_safety(info: ModelInfo) -> Float16Safety | None:
    """float16's measured safety for this exact model (files, torch), or None if never audited.

    Pure and torch-free: reads the cache that ``mergechat doctor PATH --fidelity`` writes. A
    changed weight file, another torch version or a malformed cache entry gives None.
    """
    key = model_key(info)
    if key is None:
        return None
    entry = _read_entries(cache_file()).get(key)
    try:
        data = entry["safety"]  # type: ignore[index]
        value = data["worst_value"]
        name = data["worst_name"]
        if not isinstance(data["safe"], bool) or not isinstance(data["reason"], str):
            raise TypeError("bad safety entry")
        return Float16Safety(
            safe=data["safe"],
            reason=data["reason"],
            worst_name=None if name is None else str(name),
            worst_value=None if value is None else float(value),
        )
    except (KeyError, TypeError, ValueError):
        return None
