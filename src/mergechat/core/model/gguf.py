"""Read a GGUF file's metadata and tensor table (no tensor data) with the ``gguf`` package."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergechat.core.errors import ModelFolderError

if TYPE_CHECKING:
    from gguf import GGUFReader


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF file says about itself."""

    path: Path
    #: ``general.architecture`` (e.g. ``llama``); GGUF's equivalent of ``model_type``.
    architecture: str | None
    #: The quantisation type name, e.g. ``Q4_1``, ``Q8_0``, ``F16``.
    quantization: str | None
    #: Sum of the element counts of every tensor.
    parameter_count: int
    context_length: int | None
    block_count: int | None
    head_count: int | None
    head_count_kv: int | None
    embedding_length: int | None
    #: ``<arch>.feed_forward_length``: the MLP width.
    feed_forward_length: int | None
    #: ``<arch>.vocab_size`` or, when absent, the length of ``tokenizer.ggml.tokens``.
    vocab_size: int | None
    #: ``<arch>.attention.key_length`` or embedding_length / head_count.
    head_dim: int | None
    #: ``general.name`` when set.
    name: str | None
    has_tokenizer: bool
    has_chat_template: bool
    #: Elements per tensor type name (``F32``, ``Q4_1`` ...).
    elements_by_type: dict[str, int] = field(default_factory=dict)


def _scalar(reader: GGUFReader, key: str) -> Any:
    fld = reader.get_field(key)
    if fld is None or not fld.types:
        return None
    try:
        return fld.contents()
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def _int(value: Any) -> int | None:
    # Per-layer arrays (e.g. head counts of hybrid models): the largest entry sizes the KV cache.
    if isinstance(value, list):
        ints = [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
        return max(ints) if ints else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _quantization(reader: GGUFReader, elements_by_type: dict[str, int]) -> str | None:
    from gguf import LlamaFileType

    file_type = _int(_scalar(reader, "general.file_type"))
    if file_type is not None:
        try:
            name = LlamaFileType(file_type).name
        except ValueError:
            name = None
        if name is not None and name != "GUESSED":
            return "F32" if name == "ALL_F32" else name.removeprefix("MOSTLY_")
    # Without a file type, the type holding the most elements is what the file "is".
    if not elements_by_type:
        return None
    return Counter(elements_by_type).most_common(1)[0][0]


def _open(path: Path) -> GGUFReader:
    try:
        from gguf import GGUFReader
    except ImportError as exc:  # pragma: no cover - gguf is a runtime dependency
        raise ModelFolderError(
            f"cannot read {path}: the 'gguf' package is not installed", hint="pip install gguf"
        ) from exc
    try:
        return GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError, IndexError, OSError ... on bad input
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFolderError(
            f"not a valid GGUF file: {path} ({reason})",
            hint="the file is damaged, incomplete or not GGUF",
        ) from exc


def read_gguf_info(path: Path) -> GGUFInfo:
    """Read ``path``'s metadata; raise `ModelFolderError` "not a valid GGUF file" if it is not."""
    reader = _open(path)
    arch = _scalar(reader, "general.architecture")
    arch = arch if isinstance(arch, str) else None
    prefix = f"{arch}." if arch else "\0"  # an impossible prefix when the arch is unknown

    elements_by_type: dict[str, int] = {}
    for tensor in reader.tensors:
        type_name = tensor.tensor_type.name
        elements_by_type[type_name] = elements_by_type.get(type_name, 0) + int(tensor.n_elements)

    tokens = reader.get_field("tokenizer.ggml.tokens")
    vocab_size = _int(_scalar(reader, prefix + "vocab_size"))
    if vocab_size is None and tokens is not None:
        vocab_size = len(tokens.data)
    head_count = _int(_scalar(reader, prefix + "attention.head_count"))
    embedding = _int(_scalar(reader, prefix + "embedding_length"))
    head_dim = _int(_scalar(reader, prefix + "attention.key_length"))
    if head_dim is None and embedding and head_count:
        head_dim = embedding // head_count
    name = _scalar(reader, "general.name")
    info = GGUFInfo(
        path=path,
        architecture=arch,
        quantization=_quantization(reader, elements_by_type),
        parameter_count=sum(elements_by_type.values()),
        context_length=_int(_scalar(reader, prefix + "context_length")),
        block_count=_int(_scalar(reader, prefix + "block_count")),
        head_count=head_count,
        head_count_kv=_int(_scalar(reader, prefix + "attention.head_count_kv")) or head_count,
        embedding_length=embedding,
        feed_forward_length=_int(_scalar(reader, prefix + "feed_forward_length")),
        vocab_size=vocab_size,
        head_dim=head_dim,
        name=name if isinstance(name, str) else None,
        has_tokenizer=reader.get_field("tokenizer.ggml.model") is not None,
        has_chat_template=reader.get_field("tokenizer.chat_template") is not None,
        elements_by_type=elements_by_type,
    )
    del reader  # drop the memory map now rather than at garbage collection
    return info
