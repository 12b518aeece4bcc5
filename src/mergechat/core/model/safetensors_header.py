"""Read safetensors headers without touching tensor data, through `safetensors.safe_open`: the
validator transformers runs at load, so a file that passes here also passes there."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from safetensors import SafetensorError, safe_open

from mergechat.core.dtypes import SAFETENSORS_CODES, DType
from mergechat.core.errors import ModelFolderError

#: The safetensors format caps the header at 100 MB; a larger length means a corrupt file.
MAX_HEADER_BYTES: Final = 100 * 1024 * 1024
_LIBRARY_PREFIX: Final = "Error while deserializing header: "
#: The library's reasons, said for people (the rest are passed on as they are).
_REASONS: Final = (
    ("invalid UTF-8", "the header is not UTF-8 text"),
    ("expected struct HashMetadata", "the header is not a JSON object of tensors"),
    ("invalid shape, data type, or offset", "a tensor's shape, dtype and data_offsets disagree"),
    ("invalid offset", "a tensor has invalid data_offsets"),
    ("not fully covered", "the tensors do not fill the file's data exactly"),
    ("unknown variant", "a tensor has a dtype that safetensors does not know"),
)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as described by a header: its name, dtype code and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        """Number of elements (1 for a scalar)."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    """The parsed header of one ``.safetensors`` file."""

    path: Path
    tensors: tuple[TensorEntry, ...]
    #: The free-form ``__metadata__`` string map (e.g. ``{"format": "pt"}``).
    metadata: dict[str, str]
    file_size: int

    @property
    def parameter_count(self) -> int:
        """Elements of every tensor in the file, whatever its dtype."""
        return sum(t.numel for t in self.tensors)


@dataclass(frozen=True)
class WeightsSummary:
    """Totals over one or more headers (e.g. all shards of a model)."""

    parameter_count: int
    #: Floating-point dtypes that mergechat runs, most elements first.
    stored_dtypes: tuple[DType, ...]
    #: Elements per safetensors dtype code, all codes included.
    elements_by_code: dict[str, int]


def read_header(path: Path) -> SafetensorsHeader:
    """Read and validate the header of ``path``; raise `ModelFolderError` naming the file.

    `safe_open` checks what the load will (header size, JSON, every tensor's dtype, shape and
    offsets, data covering the file exactly); no tensor is read. It imports numpy, never torch.
    """
    try:
        file_size = path.stat().st_size
        with safe_open(str(path), framework="numpy") as handle:
            metadata: dict[str, str] = dict(handle.metadata() or {})
            tensors = tuple(_entry(handle, name) for name in sorted(handle.keys()))
    except SafetensorError as exc:
        raise _explain(path, str(exc)) from None
    except OSError as exc:
        raise ModelFolderError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return SafetensorsHeader(path=path, tensors=tensors, metadata=metadata, file_size=file_size)


def _entry(handle: Any, name: str) -> TensorEntry:
    view = handle.get_slice(name)
    return TensorEntry(name, str(view.get_dtype()), tuple(int(d) for d in view.get_shape()))


def _corrupt(path: Path, reason: str) -> ModelFolderError:
    return ModelFolderError(
        f"corrupt safetensors header in {path}: {reason}",
        hint="the file is damaged or incomplete; download or save it again",
    )


def _explain(path: Path, library: str) -> ModelFolderError:
    """One clear error for what `safe_open` refused: sizes read from the file, then its reason."""
    reason = library.removeprefix(_LIBRARY_PREFIX)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            (length,) = struct.unpack("<Q", prefix) if len(prefix) == 8 else (0,)
            raw = fh.read(min(length, MAX_HEADER_BYTES)) if 0 < length < size else b""
    except OSError as exc:
        return ModelFolderError(f"cannot read {path}: {exc.strerror or exc}")
    if size < 8:
        return _corrupt(path, f"the file has only {size} bytes")
    if length == 0 or length > MAX_HEADER_BYTES or 8 + length > size:
        return _corrupt(path, f"header length {length} does not fit the file size {size}")
    end = _data_end(raw)
    if "not fully covered" in reason and end is not None and 8 + length + end > size:
        return ModelFolderError(
            f"truncated safetensors file {path}: its tensors end at byte {8 + length + end} "
            f"but the file has {size} bytes",
            hint="the download or save was interrupted; fetch the file again",
        )
    for known, said in _REASONS:
        if known in reason:
            return _corrupt(path, f"{said} ({reason})")
    if reason.startswith("invalid JSON in header: "):
        return _corrupt(path, f"the header is not valid JSON ({reason.split(': ', 1)[1]})")
    return _corrupt(path, reason)


def _data_end(raw: bytes) -> int | None:
    """Where the last tensor's data ends, per the header (None when it does not say)."""
    try:
        doc = json.loads(raw)
        ends = [e["data_offsets"][1] for k, e in doc.items() if k != "__metadata__"]
        return max((int(e) for e in ends), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def summarize(headers: Iterable[SafetensorsHeader]) -> WeightsSummary:
    """Total parameter count over ``headers`` and the floating dtypes found, most elements first."""
    by_code: dict[str, int] = {}
    for header in headers:
        for tensor in header.tensors:
            by_code[tensor.dtype] = by_code.get(tensor.dtype, 0) + tensor.numel
    by_dtype: dict[DType, int] = {}
    for code, count in by_code.items():
        dtype = SAFETENSORS_CODES.get(code)
        if dtype is not None:
            by_dtype[dtype] = by_dtype.get(dtype, 0) + count
    ordered = sorted(by_dtype, key=lambda d: -by_dtype[d])
    return WeightsSummary(
        parameter_count=sum(by_code.values()),
        stored_dtypes=tuple(ordered),
        elements_by_code=by_code,
    )
