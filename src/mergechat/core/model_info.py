"""`ModelInfo`: everything known about a model path before any weight is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mergechat.core.dtypes import ITEMSIZE, DType
from mergechat.core.merge import MergeInfo

WeightsFormat = Literal["safetensors", "gguf", "pytorch-bin"]


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
    merge: MergeInfo | None = None
    #: For GGUF: the file inside a folder or the file itself, and its quantisation type name.
    gguf_file: Path | None = None
    gguf_quantization: str | None = None
    #: True when config.json has ``auto_map`` (the folder ships Python code).
    ships_code: bool = False
    #: Problems found (e.g. declared vs stored dtype mismatch); the model may still load.
    warnings: tuple[str, ...] = field(default_factory=tuple)

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
