"""Names, sizes and range/exactness rules of the three floating-point precisions mergechat runs."""

from __future__ import annotations

from typing import Final, Literal, cast

DType = Literal["float32", "bfloat16", "float16"]

#: The order every list of precisions is shown in (the precision menu's 1, 2, 3).
DTYPES: Final[tuple[DType, ...]] = ("float32", "bfloat16", "float16")

ITEMSIZE: Final[dict[DType, int]] = {"float32": 4, "bfloat16": 2, "float16": 2}

_ALIASES: Final[dict[str, DType]] = {
    "float32": "float32",
    "fp32": "float32",
    "f32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
}

# Exponent bits decide the range: float16 overflows above 65504, bfloat16 and float32 do not.
_EXPONENT_BITS: Final[dict[DType, int]] = {"float32": 8, "bfloat16": 8, "float16": 5}
_MANTISSA_BITS: Final[dict[DType, int]] = {"float32": 23, "bfloat16": 7, "float16": 10}

# safetensors header dtype codes for floating-point tensors.
SAFETENSORS_CODES: Final[dict[str, DType]] = {
    "F32": "float32",
    "BF16": "bfloat16",
    "F16": "float16",
}


def normalize_dtype(name: object) -> DType | None:
    """Map a dtype spelling (``"bf16"``, ``"torch.bfloat16"``, a ``torch.dtype``) to a `DType`.

    Returns None for anything that is not one of the three floating-point precisions.
    """
    text = str(name).strip().lower()
    text = text.removeprefix("torch.")
    return _ALIASES.get(text)


def parse_dtype_choice(name: str) -> DType | Literal["auto"]:
    """Parse a user's ``--dtype`` value; raises ValueError naming the valid choices."""
    if name.strip().lower() == "auto":
        return "auto"
    dtype = normalize_dtype(name)
    if dtype is None:
        raise ValueError(f"unknown dtype {name!r}; choose auto, {', '.join(DTYPES)}")
    return dtype


def has_range_of(candidate: DType, reference: DType) -> bool:
    """True when ``candidate`` represents every finite magnitude ``reference`` can (no overflow)."""
    return _EXPONENT_BITS[candidate] >= _EXPONENT_BITS[reference]


def is_exact_cast(source: DType, target: DType) -> bool:
    """True when every value of ``source`` is exactly representable in ``target``."""
    if source == target:
        return True
    return (
        _EXPONENT_BITS[target] >= _EXPONENT_BITS[source]
        and _MANTISSA_BITS[target] >= _MANTISSA_BITS[source]
    )


def torch_dtype(name: DType) -> object:
    """Return the ``torch.dtype`` for ``name`` (imports torch: call from the engine thread only)."""
    import torch

    return cast(object, getattr(torch, name))
