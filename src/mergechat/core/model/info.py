"""`ModelInfo`: everything known about a model path before any weight is loaded, and the checks
that find the `ModelProblem` s which stop a model from chatting (run by ``inspect``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mergechat.core.dtypes import ITEMSIZE, DType
from mergechat.core.model.pickle_scan import PickleCheck
from mergechat.core.model.recipe import MergeInfo
from mergechat.core.model.safetensors_header import SafetensorsHeader

WeightsFormat = Literal["safetensors", "gguf", "pytorch-bin"]

#: Names of the token embedding matrix across architectures (its rows bound the token ids).
EMBEDDING_SUFFIXES = (
    "embed_tokens.weight",
    "wte.weight",
    "word_embeddings.weight",
    "tok_embeddings.weight",
)


@dataclass(frozen=True)
class ModelProblem:
    """Something found at inspection that stops the model from loading or chatting."""

    message: str
    hint: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """The result of inspecting a model folder or a ``.gguf`` file."""

    #: The folder (or the ``.gguf`` file) as given, resolved.
    path: Path
    #: Short display name (folder or file stem).
    name: str
    model_type: str | None
    architectures: tuple[str, ...]
    #: ``dtype`` (or older ``torch_dtype``, also under ``text_config``) from config.json.
    declared_dtype: DType | None
    #: Floating-point dtypes found in the stored tensors, most parameters first.
    stored_dtypes: tuple[DType, ...]
    #: Exact parameter count from the safetensors headers / GGUF tensor shapes (None if unknown).
    parameter_count: int | None
    weights_format: WeightsFormat
    #: The weight files (shards in index order, or the single file).
    weight_files: tuple[Path, ...]
    #: Total bytes of the weight files on disk.
    weights_bytes_on_disk: int
    has_tokenizer: bool
    has_chat_template: bool
    has_generation_config: bool
    context_length: int | None
    #: Size of the token embedding matrix (config ``vocab_size``), for the tokenizer check.
    vocab_size: int | None = None
    num_layers: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    #: Width of the residual stream, of the MLP, and the query head count (the probe's shapes).
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_heads: int | None = None
    merge: MergeInfo | None = None
    #: For GGUF: the file inside a folder or the file itself, and its quantisation type name.
    gguf_file: Path | None = None
    gguf_quantization: str | None = None
    #: True when config.json has ``auto_map`` (the folder ships Python code).
    ships_code: bool = False
    #: Problems found (e.g. declared vs stored dtype mismatch); the model may still load.
    warnings: tuple[str, ...] = field(default_factory=tuple)
    #: Problems that stop it from loading or chatting (unknown architecture, no tokenizer, a
    #: tokenizer larger than the embedding matrix, a pickle that needs full unpickling).
    #: ``inspect_model`` raises the first unless called with ``strict=False`` (doctor).
    problems: tuple[ModelProblem, ...] = field(default_factory=tuple)

    @property
    def native_dtype(self) -> DType:
        """The precision the model "is": merge out_dtype, else declared, else stored, else fp32."""
        if self.merge is not None and self.merge.effective_dtype is not None:
            return self.merge.effective_dtype
        if self.declared_dtype is not None:
            return self.declared_dtype
        if self.stored_dtypes:
            return self.stored_dtypes[0]
        return "float32"

    @property
    def disk_dtype(self) -> DType:
        """The dtype the weights are stored in (GGUF dequantises to float32)."""
        if self.weights_format == "gguf":
            return "float32"
        if self.stored_dtypes:
            return self.stored_dtypes[0]
        return self.declared_dtype or "float32"

    def weights_bytes(self, dtype: DType) -> int | None:
        """Bytes the weights take in memory in ``dtype`` (None when the count is unknown)."""
        if self.parameter_count is None:
            return None
        return self.parameter_count * ITEMSIZE[dtype]

    def kv_cache_bytes(self, dtype: DType, tokens: int) -> int | None:
        """Bytes of the KV cache for ``tokens`` of context in ``dtype`` (None when unknown)."""
        if None in (self.num_layers, self.num_kv_heads, self.head_dim):
            return None
        assert self.num_layers and self.num_kv_heads and self.head_dim
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * tokens * ITEMSIZE[dtype]


# -- checks that find problems (no weights loaded) -------------------------------------------------
def tokenizer_size_problem(path: Path, rows: int | None, rows_source: str) -> ModelProblem | None:
    """The problem when tokenizer.json cannot be read (named, with why) or has ids past the
    embedding matrix (an index error)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:  # a permission error is not "no usable tokenizer"
        return ModelProblem(f"cannot read the tokenizer file {path}: {exc.strerror or exc}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = json_problem(exc) if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        return ModelProblem(
            f"the tokenizer file {path} is not valid JSON: {problem}",
            hint="copy tokenizer.json from the base model again (the copy is damaged)",
        )
    if rows is None:
        return None
    ids: set[int] = set()
    model = data.get("model") if isinstance(data, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(vocab, dict):
        ids.update(v for v in vocab.values() if isinstance(v, int))
    elif isinstance(vocab, list):  # Unigram: [[piece, score], ...], id = position
        ids.update(range(len(vocab)))
    added = data.get("added_tokens") if isinstance(data, dict) else None
    for token in added if isinstance(added, list) else ():
        if isinstance(token, dict) and isinstance(token.get("id"), int):
            ids.add(token["id"])
    if not ids or max(ids) < rows:
        return None
    return ModelProblem(
        f"the tokenizer has {len(ids)} tokens (ids up to {max(ids)}) but the embedding matrix "
        f"has only {rows} rows ({rows_source}); ids past the matrix crash generation",
        hint="use the tokenizer the weights were made with (mergekit: tokenizer_source), or "
        "resize the embeddings to the tokenizer",
    )


def json_problem(exc: json.JSONDecodeError) -> str:
    """What is wrong with a JSON file, where: ``the file is empty`` for 0 bytes."""
    if not exc.doc.strip():
        return "the file is empty"
    return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"


def embedding_rows(headers: list[SafetensorsHeader]) -> tuple[int | None, str]:
    """Rows of the token embedding matrix as stored in the safetensors headers, and its name."""
    for header in headers:
        for tensor in header.tensors:
            if tensor.name.endswith(EMBEDDING_SUFFIXES) and len(tensor.shape) == 2:
                return tensor.shape[0], tensor.name
    return None, ""


def pickle_problem(files: tuple[Path, ...], unsafe_globals: PickleCheck) -> ModelProblem | None:
    """Refuse pickles that need more than ``torch.load(weights_only=True)``: they run code."""
    for file in files:
        unsafe = unsafe_globals(file)
        if unsafe:
            shown = ", ".join(unsafe[:3]) + (", ..." if len(unsafe) > 3 else "")
            return ModelProblem(
                f"refusing {file.name}: its pickle calls {shown}, so it cannot be loaded "
                "with weights_only=True and unpickling it would run code",
                hint="use a safetensors copy of the model from a source you trust; "
                "mergechat never fully unpickles weight files",
            )
    return None


#: ``(model_type, architectures) -> problem``: whether the installed transformers can build it
#: (`mergechat.core.detect.model_support`; below it, inspection cannot import transformers).
ArchitectureCheck = Callable[[str | None, list[Any]], ModelProblem | None]


def config_value(config: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` set in config.json, else in its ``text_config`` (multimodal)."""
    text_config = config.get("text_config")
    for scope in (config, text_config if isinstance(text_config, dict) else {}):
        for key in keys:
            if scope.get(key) is not None:
                return scope[key]
    return None


def positive_int(value: Any) -> int | None:
    """A positive int, else None (config values can be null, bools or floats)."""
    positive = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return value if positive else None
