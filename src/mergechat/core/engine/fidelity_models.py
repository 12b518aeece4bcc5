"""The model of an audit row: the float32 master, a cast copy of it, or a fresh load."""

from __future__ import annotations

import copy
import importlib
from typing import Any

from mergechat.core.detect.capabilities import DeviceInfo
from mergechat.core.dtypes import DType, torch_dtype
from mergechat.core.model.info import ModelInfo


def prepare_model(
    info: ModelInfo, master: Any, device: str, dtype: DType, trust_remote_code: bool
) -> Any:
    """The model on ``device`` in ``dtype``: the master itself, a cast copy of it, or a load."""
    if master is None:
        return load_model(info, dtype, device, trust_remote_code)
    if (device, dtype) == ("cpu", "float32"):
        return master
    return cast_copy(master, device, dtype)


def cast_copy(master: Any, device: str, dtype: DType) -> Any:
    """A copy of ``master`` with floating tensors cast to ``dtype`` on ``device``.

    Each tensor is cast straight into the copy (deepcopy with a memo), so the extra memory is the
    copy's size, never a second float32 model. Tied weights stay tied.
    """
    import torch

    target: Any = torch_dtype(dtype)
    memo: dict[int, Any] = {}
    for tensor in (*master.parameters(), *master.buffers()):
        if id(tensor) in memo:
            continue
        data = tensor.detach()
        data = data.to(device=device, dtype=target) if data.is_floating_point() else data.to(device)
        if isinstance(tensor, torch.nn.Parameter):
            data = torch.nn.Parameter(data, requires_grad=False)
        memo[id(tensor)] = data
    return copy.deepcopy(master, memo)


def load_model(info: ModelInfo, dtype: DType, device: str, trust_remote_code: bool) -> Any:
    """Load the weights in ``dtype`` straight onto ``device`` (eval mode)."""
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    folder, extra = _source(info)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype), **extra}
    if "gguf_file" in extra:
        from mergechat.core.engine.gguf_convert import dequantize_kwargs

        kwargs.update(dequantize_kwargs())
    if info.weights_format == "pytorch-bin":
        kwargs["weights_only"] = True  # never full unpickling
    if device != "cpu":
        kwargs["device_map"] = {"": device}
    model: Any = AutoModelForCausalLM.from_pretrained(
        folder, trust_remote_code=trust_remote_code, **kwargs
    )
    return model.eval()


def fits(info: ModelInfo, device: DeviceInfo, dtype: DType, tokens: int) -> bool:
    """Whether ``dtype`` fits in ``device``'s memory free now (a loaded master already counts)."""
    try:
        from mergechat.core.detect.memory_fit import needed_bytes

        needed = needed_bytes(info, dtype, tokens)
    except ImportError:  # the policy's estimate when it can be had; else weights + KV cache
        weights = info.weights_bytes(dtype)
        needed = None if weights is None else weights + (info.kv_cache_bytes(dtype, tokens) or 0)
    free = _free_bytes(device)
    return needed is None or free is None or needed <= free


def _free_bytes(device: DeviceInfo) -> int | None:
    """Memory free on ``device`` now (the detection's figure is from before the master loaded)."""
    if device.kind == "cpu":
        try:
            psutil: Any = importlib.import_module("psutil")  # comes with accelerate
        except ImportError:  # pragma: no cover
            return device.free_bytes
        return int(psutil.virtual_memory().available)
    if device.kind == "cuda":
        import torch

        index = int(device.id.partition(":")[2] or 0)
        return int(torch.cuda.mem_get_info(index)[0])
    return device.free_bytes


def load_tokenizer(info: ModelInfo, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    folder, extra = _source(info)
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code, **extra)


def _quiet_transformers() -> None:
    """No progress bars or info logs on doctor's output."""
    from transformers.utils import logging as hf_logging

    hf: Any = hf_logging
    hf.disable_progress_bar()
    hf.set_verbosity_error()


def _source(info: ModelInfo) -> tuple[Any, dict[str, Any]]:
    if info.weights_format == "gguf" and info.gguf_file is not None:
        return info.gguf_file.parent, {"gguf_file": info.gguf_file.name}
    return info.path, {}
