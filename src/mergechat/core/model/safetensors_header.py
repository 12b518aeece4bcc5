"""Read weight-file headers without touching tensor data: safetensors headers (8-byte length +
JSON), and the globals a pickled ``pytorch_model.bin`` would call when unpickled."""

from __future__ import annotations

import json
import math
import pickletools
import re
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mergechat.core.dtypes import SAFETENSORS_CODES, DType
from mergechat.core.errors import ModelFolderError

#: The safetensors format caps the header at 100 MB; a larger length means a corrupt file.
MAX_HEADER_BYTES: Final = 100 * 1024 * 1024

# Bytes per element of each safetensors dtype code, for the data-size check.
_ITEM_BYTES: Final[dict[str, int]] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as described by a header: dtype code, shape and byte range in the data area."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

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


def _corrupt(path: Path, reason: str) -> ModelFolderError:
    return ModelFolderError(
        f"corrupt safetensors header in {path}: {reason}",
        hint="the file is damaged or incomplete; download or save it again",
    )


def _parse_entry(path: Path, name: str, raw: object) -> TensorEntry:
    if not isinstance(raw, dict):
        raise _corrupt(path, f"entry {name!r} is not an object")
    dtype, shape, offsets = raw.get("dtype"), raw.get("shape"), raw.get("data_offsets")
    if not isinstance(dtype, str):
        raise _corrupt(path, f"tensor {name!r} has no dtype")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _corrupt(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise _corrupt(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    entry = TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1])
    item = _ITEM_BYTES.get(dtype)
    # Sub-byte and unknown codes (F4, F6 ...) cannot be size-checked; the rest must agree.
    if item is not None and entry.end - entry.start != entry.numel * item:
        raise _corrupt(
            path,
            f"tensor {name!r} ({dtype}, shape {list(shape)}) should take "
            f"{entry.numel * item} bytes but its data_offsets span {entry.end - entry.start}",
        )
    return entry


def read_header(path: Path) -> SafetensorsHeader:
    """Read and validate the header of ``path``; raise `ModelFolderError` naming the file.

    Checks the header length against the file size, that the header is a JSON object of
    well-formed tensor entries, and that no tensor's data lies beyond the end of the file.
    """
    try:
        file_size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise _corrupt(path, f"the file has only {file_size} bytes")
            (length,) = struct.unpack("<Q", prefix)
            if length == 0 or length > MAX_HEADER_BYTES or 8 + length > file_size:
                raise _corrupt(
                    path, f"header length {length} does not fit the file size {file_size}"
                )
            raw = fh.read(length)
    except OSError as exc:
        raise ModelFolderError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _corrupt(path, "the header is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise _corrupt(path, f"the header is not valid JSON ({exc.msg})") from exc
    if not isinstance(doc, dict):
        raise _corrupt(path, "the header is not a JSON object")
    metadata_raw = doc.pop("__metadata__", None)
    metadata = (
        {str(k): str(v) for k, v in metadata_raw.items()} if isinstance(metadata_raw, dict) else {}
    )
    tensors = tuple(_parse_entry(path, name, entry) for name, entry in doc.items())
    data_size = file_size - 8 - length
    for tensor in tensors:
        if tensor.end > data_size:
            raise ModelFolderError(
                f"truncated safetensors file {path}: tensor {tensor.name!r} ends at byte "
                f"{8 + length + tensor.end} but the file has {file_size} bytes",
                hint="the download or save was interrupted; fetch the file again",
            )
    return SafetensorsHeader(path=path, tensors=tensors, metadata=metadata, file_size=file_size)


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


# -- pickled checkpoints (pytorch_model.bin) -------------------------------------------------------
#: Globals a plain state dict saved by ``torch.save`` references; torch's ``weights_only=True``
#: unpickler allows them. Anything else means the file needs full unpickling (it runs code).
_SAFE_GLOBALS: Final = frozenset(
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._tensor._rebuild_from_type_v2",
        "torch.nn.parameter.Parameter",
        "torch.Size",
        "torch.device",
        "torch.storage.UntypedStorage",
        "torch.UntypedStorage",
    }
)
_SAFE_GLOBAL_RE: Final = re.compile(r"torch\.(\w+Storage|float\w*|bfloat16|half|u?int\d+|bool)")
_STRING_OPS: Final = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"}
)
#: The legacy (pre-zip) format is a few pickles in a row: magic, protocol, sys info, the data.
_LEGACY_PICKLES: Final = 4


def _globals_of(ops: Iterable[tuple[pickletools.OpcodeInfo, object, int | None]]) -> list[str]:
    """``module.name`` of every global one pickle loads, without unpickling it.

    ``STACK_GLOBAL`` takes its names from the stack, so string pushes and the memo are tracked;
    a name that cannot be followed is reported as ``?`` (which no allowlist accepts).
    """
    found: list[str] = []
    pushed: list[str | None] = []
    memo: dict[int, str | None] = {}
    for op, arg, _pos in ops:
        name = op.name
        if name == "GLOBAL":
            # Protocol 2 writes Python 2 names (``__builtin__ exec``).
            found.append(str(arg).replace(" ", ".").replace("__builtin__.", "builtins."))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            module, attr = (pushed[-2:] if len(pushed) >= 2 else [None, None])[:2]
            found.append(f"{module}.{attr}" if module and attr else "?")
            pushed.append(None)
        elif name in _STRING_OPS:
            pushed.append(str(arg))
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(int(str(arg))))
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(str(arg))] = pushed[-1] if pushed else None
        else:
            pushed.append(None)
    return found


def unsafe_pickle_globals(path: Path) -> tuple[str, ...]:
    """The globals in ``path`` (a ``torch.save`` file) that ``weights_only=True`` would refuse.

    The pickle is only parsed (`pickletools`), never executed. Raises `ModelFolderError` when
    the file is not a PyTorch checkpoint at all.
    """
    names: list[str] = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for entry in archive.namelist():
                    if entry.endswith("data.pkl"):
                        names += _globals_of(pickletools.genops(archive.read(entry)))
        else:
            with path.open("rb") as fh:
                for _ in range(_LEGACY_PICKLES):
                    names += _globals_of(pickletools.genops(fh))
    except OSError as exc:
        raise ModelFolderError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFolderError(
            f"not a PyTorch checkpoint: {path} ({exc})",
            hint="the file is damaged or incomplete; download or save it again",
        ) from exc
    unsafe = (n for n in names if n not in _SAFE_GLOBALS and not _SAFE_GLOBAL_RE.fullmatch(n))
    return tuple(dict.fromkeys(unsafe))
