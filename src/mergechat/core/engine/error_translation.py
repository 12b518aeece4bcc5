"""Turn torch / transformers exceptions into one clear `MergechatError` with a hint."""

from __future__ import annotations

import re

from mergechat.core.dtypes import DType
from mergechat.core.errors import BadInputError, MergechatError, ModelFolderError, first_line
from mergechat.core.text import format_bytes

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
# "Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 15.77 GiB of which 1.05 GiB is free"
_GPU_OOM_SIZES = re.compile(
    r"Tried to allocate ([\d.]+ [KMGT]?i?B).*?total capacity of ([\d.]+ [KMGT]?i?B) of which "
    r"([\d.]+ [KMGT]?i?B) is free",
    re.DOTALL,
)
_GPU_OOM_NEEDED = re.compile(r"Tried to allocate ([\d.]+ [KMGT]?i?B)")
_CPU_OOM_NEEDED = re.compile(r"you tried to allocate (\d+) bytes")
_OOM_HINT = (
    "choose a smaller dtype (bfloat16 or float16 take half the memory of float32), a shorter "
    "context, or offload: --device auto lets accelerate spread layers over GPU and CPU "
    "(device_map); close other programs to free memory"
)
# Errors that mean the model files are broken or not what mergechat can load (bad input, exit 2):
# the pattern, the message, and the hint.
_BROKEN_FILES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(r"Weights only load failed|weights_only", re.IGNORECASE),
        "refusing to load a pickled weight file that needs full unpickling (it could run code); "
        "mergechat loads .bin files only with weights_only=True",
        "use a safetensors copy of the model from a source you trust",
    ),
    (
        re.compile(r"Error while deserializing header|SafetensorError|MetadataIncompleteBuffer"),
        "a safetensors file of the model is damaged or incomplete",
        "download or save the model again",
    ),
    (
        re.compile(r"size mismatch for ([\w.]+)"),
        "the weights do not match config.json (tensor shapes differ)",
        "check vocab_size and hidden sizes in config.json against the weights (a bad merge?)",
    ),
    (
        re.compile(r"Unrecognized configuration class"),
        "the model is not a text-generation model transformers can load for chat",
        "mergechat chats with causal language models (llama, mistral, qwen2, ...)",
    ),
    (
        re.compile(r"does not appear to have a file named|Error no file named|no file named"),
        "a file the model needs is missing from the folder",
        "the download or copy is incomplete; fetch the model again",
    ),
)


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
    if _from_chat_template(exc):
        return ModelFolderError(
            f"the model's chat template failed: {first_line(exc)}",
            hint="fix chat_template.jinja (or chat_template in tokenizer_config.json), or remove "
            "it to chat with mergechat's ChatML fallback",
        )
    if isinstance(exc, PermissionError):
        where = f" {exc.filename}" if exc.filename else " a file of the model"
        return ModelFolderError(
            f"cannot read{where}: permission denied",
            hint="give your user read access to the model's files (chmod -R u+r)",
        )

    match = _NOT_IMPLEMENTED.search(text)
    if match:
        return _unsupported_dtype(_TORCH_DTYPE_NAMES[match.group(2)], match.group(1), device)

    if is_out_of_memory(exc):
        return out_of_memory_error(exc, dtype=dtype, device=device)
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
    for pattern, message, hint in _BROKEN_FILES:
        if found := pattern.search(text):
            detail = f" ({found.group(1)})" if found.groups() else ""
            return ModelFolderError(f"{message}{detail}", hint=hint)
    return MergechatError(first_line(exc))


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a GPU out-of-memory error or a failed CPU allocation."""
    text = str(exc)
    return (
        _is_gpu_oom(exc, text)
        or isinstance(exc, MemoryError)
        or any(m in text for m in _CPU_OOM_MARKERS)
    )


def out_of_memory_error(
    exc: BaseException,
    *,
    dtype: DType | None = None,
    device: str | None = None,
    needed_bytes: int | None = None,
    free_bytes: int | None = None,
    what: str = "",
) -> MergechatError:
    """The message for an out-of-memory ``exc``: the memory needed vs free, and what to try.

    ``needed_bytes``/``free_bytes`` (e.g. the model's fit at load) win over what the error text
    says (one failed allocation) and what the device reports free now. ``what`` names the work
    (``loading the model``).
    """
    text = str(exc)
    precision = dtype or "this precision"
    doing = f" {what}" if what else ""
    if _is_gpu_oom(exc, text):
        where = device if device and device not in ("auto", "cpu") else "the GPU"
        needed, free, total = _gpu_oom_sizes(text)
        if needed_bytes is not None:
            needed = f"{format_bytes(needed_bytes)} needed"
        if free_bytes is not None:
            free = format_bytes(free_bytes)
        sizes = _sizes_clause(needed, free, total)
        return MergechatError(f"out of memory on {where}{doing} in {precision}{sizes}", _OOM_HINT)
    needed = None
    if needed_bytes is not None:
        needed = f"{format_bytes(needed_bytes)} needed"
    elif match := _CPU_OOM_NEEDED.search(text):
        needed = f"tried to allocate {format_bytes(int(match.group(1)))}"
    if free_bytes is None:
        free_bytes = _free_ram()
    free = format_bytes(free_bytes) if free_bytes is not None else None
    sizes = _sizes_clause(needed, free, None)
    return MergechatError(f"not enough RAM{doing} in {precision}{sizes}", _OOM_HINT)


def _gpu_oom_sizes(text: str) -> tuple[str | None, str | None, str | None]:
    """(``tried to allocate X``, free, total) as torch wrote them in a CUDA OOM message."""
    if match := _GPU_OOM_SIZES.search(text):
        return f"tried to allocate {match.group(1)}", match.group(3), match.group(2)
    if match := _GPU_OOM_NEEDED.search(text):
        return f"tried to allocate {match.group(1)}", None, None
    return None, None, None


def _sizes_clause(needed: str | None, free: str | None, total: str | None) -> str:
    """``: tried to allocate 2.00 GiB, 1.05 GiB free of 15.77 GiB`` (the parts known)."""
    parts = [needed] if needed else []
    if free:
        parts.append(f"{free} free" + (f" of {total}" if total else ""))
    return f": {', '.join(parts)}" if parts else ""


def _free_ram() -> int | None:
    """Free (available) RAM now, from the device query; None when it cannot be read."""
    try:
        from mergechat.core.detect.devices import detect_devices

        cpu = next((d for d in detect_devices() if d.kind == "cpu"), None)
    except Exception:  # an error path: never fail while describing a failure
        return None
    return cpu.free_bytes if cpu is not None else None


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


def _from_chat_template(exc: BaseException) -> bool:
    """True for an error raised by Jinja or inside a compiled template (the chat template)."""
    if type(exc).__module__.startswith("jinja2"):
        return True
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            return True
        tb = tb.tb_next
    return False
