"""Read a mergekit ``mergekit_config.yml`` into a `MergeInfo` (no weights touched)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mergechat.core.dtypes import DType

MERGE_CONFIG_NAMES = ("mergekit_config.yml", "mergekit_config.yaml")


@dataclass(frozen=True)
class MergeInfo:
    """What mergekit recorded about how a model was made."""

    merge_method: str | None
    base_model: str | None = None
    #: Source models named in ``models`` or ``slices``, in order, without duplicates.
    models: tuple[str, ...] = ()
    #: ``dtype`` of the merge computation.
    dtype: DType | None = None
    #: ``out_dtype``: the dtype written to disk, when set.
    out_dtype: DType | None = None
    tokenizer_source: str | None = None
    chat_template: str | None = None
    #: Where it was read from.
    source: Path | None = None
    #: Problems found while parsing (the file is still used when possible).
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def effective_dtype(self) -> DType | None:
        """The dtype the merge was saved in: ``out_dtype`` when set, else ``dtype``."""
        return self.out_dtype or self.dtype
