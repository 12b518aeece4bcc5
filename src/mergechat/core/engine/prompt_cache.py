"""The conversation's KV cache kept between turns, so the next turn prefills only what is new.

Engine thread only. A turn `take`s the cache cropped to the longest common token prefix of its
prompt and the ids the cache holds, and hands the cache back through `keep` only when the reply
ended well: a failed or cancelled reply (a cancel during the prefill leaves a half-written
cache) simply never gives it back, so the next turn prefills in full.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import psutil

#: Memory that must stay free beside the cache; below it the cache is dropped before a turn.
MARGIN_BYTES: Final[int] = 512 * 1024**2


def common_prefix(held: Sequence[int], ids: Sequence[int]) -> int:
    """How many leading ids ``held`` and ``ids`` share."""
    for index, (a, b) in enumerate(zip(held, ids, strict=False)):
        if a != b:
            return index
    return min(len(held), len(ids))


def reusable(cache: Any) -> bool:
    """True for a plain `DynamicCache` whose every layer can be cropped exactly.

    Sliding-window, linear-attention and quantized layers keep less than every past token (or
    keep it lossy), so cropping them back to a prefix is not exact: those models prefill fully.
    """
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if not isinstance(cache, DynamicCache):
        return False
    layers: list[Any] = list(cache.layers)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def cache_bytes(cache: Any) -> int:
    """The memory the cache's key and value tensors take."""
    total = 0
    for layer in getattr(cache, "layers", ()):
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if tensor is not None:
                total += tensor.numel() * tensor.element_size()
    return total


def free_bytes(device: Any) -> int:
    """Memory still available where the cache lives (the GPU's free memory on CUDA)."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    return int(psutil.virtual_memory().available)


class PromptCache:
    """The KV cache of the last turn plus the token ids it holds (``enabled=False``: never kept)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._cache: Any = None
        self._ids: list[int] = []

    @property
    def held(self) -> int:
        """How many tokens the kept cache holds (0: none kept)."""
        return len(self._ids) if self._cache is not None else 0

    def drop(self) -> None:
        """Forget the cache (model load or unload, precision switch, memory short)."""
        self._cache, self._ids = None, []

    def take(self, ids: Sequence[int], device: Any) -> tuple[Any, int]:
        """The cache cropped for a prompt of ``ids`` and how many of them it holds.

        At least one id is always left to feed (the model needs logits for the next token).
        (None, 0) means a full prefill. The cache leaves this object: `keep` gives it back.
        """
        cache, held = self._cache, self._ids
        self.drop()
        if cache is None or not self.enabled:
            return None, 0
        if free_bytes(device) < cache_bytes(cache) + MARGIN_BYTES:
            return None, 0  # memory is short: the cache goes, the full prefill needs the room
        keep = min(common_prefix(held, ids), len(ids) - 1)
        if keep <= 0:
            return None, 0
        if keep < cache.get_seq_length():
            try:
                cache.crop(keep - cache.get_seq_length())
            except Exception:  # a layer that cannot be cropped: start afresh
                return None, 0
        if cache.get_seq_length() != keep:
            return None, 0
        return cache, keep

    def keep(self, cache: Any, sequence: Sequence[int], upto: int | None = None) -> None:
        """After a reply that ended well: ``sequence`` is the prompt plus the new ids; the
        cache holds its first ``cache.get_seq_length()`` (the last new id was never fed).

        ``upto`` crops it to that many tokens first (e.g. the prompt: what a batched prefill
        wrote, leaving out what the one-token decode steps wrote).
        """
        self.drop()
        if not self.enabled or cache is None or not reusable(cache):
            return
        if upto is not None and 0 < upto < cache.get_seq_length():
            cache.crop(upto - cache.get_seq_length())
        length = cache.get_seq_length()
        if 0 < length <= len(sequence):
            self._cache, self._ids = cache, list(sequence[:length])
