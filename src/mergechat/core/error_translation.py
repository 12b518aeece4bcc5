"""Turn torch / transformers exceptions into one clear `MergechatError` with a hint."""

from __future__ import annotations

import re

from mergechat.core.dtypes import DType
from mergechat.core.errors import BadInputError, MergechatError, ModelFolderError

# `"addmm_impl_cpu_" not implemented for 'Half'` and friends: an op without a kernel for a dtype.
_NOT_IMPLEMENTED = re.compile(r"\"?([\w.]+)\"? not implemented for '(Half|BFloat16)'")
_TORCH_DTYPE_NAMES: dict[str, DType] = {"Half": "float16", "BFloat16": "bfloat16"}

_CPU_OOM_MARKERS = ("DefaultCPUAllocator: can't allocate memory", "not enough memory")
_GPU_OOM_MARKERS = ("CUDA out of memory", "MPS backend out of memory", "XPU out of memory")
_UNKNOWN_ARCH_MARKERS = ("does not recognize this architecture", "Unrecognized model")
# What transformers (legacy and new GGUF readers) and gguf raise for what they cannot read.
_GGUF_ARCH = re.compile(
    r"GGUF model with architecture (\S+) is not supported|GGUF architecture '([^']+)' is not "
    r"supported|config from a GGUF file of architecture '([^']+)'"
)
_GGUF_QUANT = re.compile(
    r"Dequantization for (\w+) is not yet implemented|ggml type (\d+) is not supported"
)
_GGUF_TOKENIZER = re.compile(r"tokenizer from a GGUF file stating tokenizer '?([^'.]+)'?")
_GGUF_HINT = "load the original Hugging Face model folder (safetensors) instead"


def translate(
    exc: BaseException, *, dtype: DType | None = None, device: str | None = None
) -> MergechatError:
    """Map ``exc`` to a `MergechatError` (or subclass) that says what happened and what to do.

    ``dtype`` and ``device`` describe what was running, to make the message concrete. A
    `MergechatError` is returned unchanged; anything unknown keeps its first line.
    """
    if isinstance(exc, MergechatError):
        return exc
    text = str(exc)
    where = device or "this device"

    match = _NOT_IMPLEMENTED.search(text)
    if match:
        return _unsupported_dtype(_TORCH_DTYPE_NAMES[match.group(2)], match.group(1), device)

    if _is_gpu_oom(exc, text):
        return MergechatError(
            f"out of memory on {where} while running in {dtype or 'this precision'}",
            hint="choose a smaller dtype (bfloat16 or float16), a shorter context, or --device "
            "auto so accelerate can offload layers to the CPU (device_map)",
        )
    if isinstance(exc, MemoryError) or any(m in text for m in _CPU_OOM_MARKERS):
        return MergechatError(
            f"not enough RAM to hold the model in {dtype or 'this precision'}",
            hint="choose a smaller dtype (bfloat16 or float16 take half of float32), close other "
            "programs, or use a GPU with device_map offload",
        )
    if "trust_remote_code" in text:
        return BadInputError(
            "the model folder ships its own Python code (auto_map in config.json) and cannot be "
            "loaded without running it",
            hint="--trust-remote-code runs that code on this machine with your permissions; use "
            "it only for a source you trust",
        )
    if isinstance(exc, OSError) and "tokenizer" in text.lower():
        return ModelFolderError(
            "no usable tokenizer in the model folder",
            hint="copy tokenizer.json and tokenizer_config.json from the base model (mergekit: "
            "--copy-tokenizer or tokenizer_source)",
        )
    gguf = _gguf_error(text)
    if gguf is not None:
        return gguf
    if any(m in text for m in _UNKNOWN_ARCH_MARKERS) or (
        isinstance(exc, KeyError) and "model_type" in text
    ):
        model_type = re.search(r"model type `([^`]+)`", text)
        named = f" ({model_type.group(1)})" if model_type else ""
        return ModelFolderError(
            f"this version of transformers does not know the model's architecture{named}",
            hint="upgrade transformers, or check model_type in config.json",
        )
    return MergechatError(_first_line(exc))


def _gguf_error(text: str) -> ModelFolderError | None:
    """A GGUF file whose architecture, quantisation or tokenizer transformers cannot read."""
    if match := _GGUF_ARCH.search(text):
        arch = next(g for g in match.groups() if g)
        return ModelFolderError(
            f"this version of transformers cannot load GGUF files of architecture {arch}",
            hint=f"upgrade transformers, or {_GGUF_HINT}",
        )
    if match := _GGUF_QUANT.search(text):
        name, number = match.groups()
        kind = name or _ggml_type_name(int(number))
        return ModelFolderError(
            f"transformers cannot dequantise the GGUF quantisation type {kind} used in this file",
            hint=f"use a GGUF file with another quantisation (for example Q8_0 or Q4_K_M), or "
            f"{_GGUF_HINT}",
        )
    if match := _GGUF_TOKENIZER.search(text):
        return ModelFolderError(
            f"transformers cannot build the tokenizer stored in this GGUF file "
            f"(tokenizer type {match.group(1)})",
            hint=f"upgrade transformers, or {_GGUF_HINT}",
        )
    return None


def _ggml_type_name(number: int) -> str:
    """``Q8_1`` for ggml type 9 (``ggml type 9`` if this gguf does not know the number)."""
    try:
        from gguf import GGMLQuantizationType

        return GGMLQuantizationType(number).name
    except (ImportError, ValueError):
        return f"ggml type {number}"


def _unsupported_dtype(dtype: DType, op: str, device: str | None) -> MergechatError:
    """The message for an op that has no kernel for ``dtype`` (the mergekit #175 crash)."""
    on_cpu = device is None or device.startswith("cpu") or "_cpu" in op
    where = "this CPU" if on_cpu else device
    others = " or ".join(d for d in ("float32", "bfloat16") if d != dtype)
    return MergechatError(
        f"{dtype} matmul is not supported on {where} with this torch ({op})",
        hint=f"choose {others}, or --dtype auto to use what the detector measured",
    )


def _is_gpu_oom(exc: BaseException, text: str) -> bool:
    # Checked by class name so this module never imports torch.
    names = {cls.__name__ for cls in type(exc).__mro__}
    return "OutOfMemoryError" in names or any(m in text for m in _GPU_OOM_MARKERS)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, KeyError) and text.startswith("'"):
        text = text.strip("'")
    first = text.splitlines()[0].strip() if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
