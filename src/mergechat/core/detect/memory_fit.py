"""How much memory a model needs in a dtype (weights + KV cache + overhead), and whether it fits
a device's free memory: the numbers the policy's verdicts and the fidelity audit start from."""

from __future__ import annotations

from typing import Final

from mergechat.core.detect.capabilities import DeviceInfo, FitResult
from mergechat.core.dtypes import ITEMSIZE, DType
from mergechat.core.model.info import ModelInfo

#: Context assumed for the KV cache when the caller gives none (capped model maximum).
DEFAULT_CONTEXT_TOKENS: Final[int] = 4096
#: Memory beyond weights + KV cache: runtime, activations, allocator slack.
OVERHEAD_BYTES: Final[int] = 256 * 2**20
OVERHEAD_SHARE: Final[float] = 0.05


def context_tokens_for(info: ModelInfo, context_tokens: int | None) -> int:
    """Tokens of KV cache to plan for: the caller's, else the model's maximum capped at 4096."""
    if context_tokens is not None:
        return context_tokens
    return min(info.context_length or DEFAULT_CONTEXT_TOKENS, DEFAULT_CONTEXT_TOKENS)


def needed_bytes(info: ModelInfo, dtype: DType, tokens: int) -> int | None:
    """Weights + KV cache + overhead in ``dtype``; None when the model's size is unknown."""
    weights = info.weights_bytes(dtype)
    if weights is None and info.weights_bytes_on_disk > 0 and info.weights_format != "gguf":
        weights = info.weights_bytes_on_disk // ITEMSIZE[info.disk_dtype] * ITEMSIZE[dtype]
    if weights is None:
        return None
    kv = info.kv_cache_bytes(dtype, tokens) or 0
    return weights + kv + OVERHEAD_BYTES + int(weights * OVERHEAD_SHARE)


def memory_fit(info: ModelInfo, device: DeviceInfo, dtype: DType, tokens: int) -> FitResult:
    """Whether ``info`` in ``dtype`` with ``tokens`` of KV cache fits ``device``'s free memory."""
    needed = needed_bytes(info, dtype, tokens)
    free = device.free_bytes
    fits = None if needed is None or free is None else needed <= free
    return FitResult(device.id, dtype, needed, free, fits)
