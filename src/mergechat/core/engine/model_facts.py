"""What a loaded model really is, read from it rather than from the request: its dtype, where
its weights are, its context window, and whether they still hold the values stored on disk."""

from __future__ import annotations

from typing import Any

import torch

from mergechat.core.dtypes import DType, is_exact_cast, normalize_dtype
from mergechat.core.errors import MergechatError
from mergechat.core.model.info import ModelInfo
from mergechat.core.settings.device_choice import INDEXED_KINDS


def read_dtype(model: Any) -> DType:
    """The floating-point dtype of the model's first parameter (what it really runs in)."""
    dtype = normalize_dtype(next(model.parameters()).dtype)
    if dtype is None:
        raise MergechatError("the model loaded with non floating-point weights (quantised?)")
    return dtype


def _device_id(place: Any) -> str:
    """The detected device's id for a torch device or device-map value (``mps:0`` -> ``mps``)."""
    device = torch.device(f"cuda:{place}" if isinstance(place, int) else place)
    kind = device.type
    return f"{kind}:{device.index or 0}" if kind in INDEXED_KINDS else kind


def device_label(model: Any) -> tuple[str, str, bool]:
    """A label such as ``cpu``, ``cuda:0`` or ``cuda:0+cpu offload``, the id of the (first)
    device holding weights, and whether it is offloaded."""
    device_map = getattr(model, "hf_device_map", None)
    if not device_map:
        device = next(model.parameters()).device
        return str(device), _device_id(device), False
    places: list[str] = []
    for value in device_map.values():
        place = f"cuda:{value}" if isinstance(value, int) else str(value)
        if place not in places:
            places.append(place)
    accelerators = [p for p in places if p not in ("cpu", "disk")]
    label = ",".join(accelerators) or "cpu"
    for kind in ("cpu", "disk"):
        if kind in places and accelerators:
            label += f"+{kind} offload"
    main = _device_id(accelerators[0]) if accelerators else "cpu"
    return label, main, len(places) > 1 or "disk" in places


def context_max(info: ModelInfo, model: Any, tokenizer: Any) -> int:
    """The context window: the inspected length, else the config's, else the tokenizer's."""
    for value in (
        info.context_length,
        getattr(model.config, "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    ):
        if isinstance(value, int) and 0 < value < 10**8:
            return value
    return 2048


def holds_disk_values(info: ModelInfo, dtype: DType) -> bool:
    """True when loading ``info`` in ``dtype`` keeps every stored value exactly."""
    stored = info.stored_dtypes or (info.disk_dtype,)
    if info.weights_format == "gguf":
        stored = ("float32",)
    return all(is_exact_cast(source, dtype) for source in stored)
