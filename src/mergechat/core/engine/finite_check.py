"""The NaN/inf guard after a load or cast: which weights hold non-finite values, and why."""

from __future__ import annotations

from typing import Any

import torch

from mergechat.core.dtypes import DType
from mergechat.core.engine.fidelity import PROBE_TEXT, probe_logits
from mergechat.core.errors import MergechatError, ModelFolderError

#: Elements checked at a time when looking for NaN/inf weights (bounds the scratch memory).
_FINITE_CHUNK = 1 << 24


def check_finite(
    model: Any, tokenizer: Any, dtype: DType, *, text: str = PROBE_TEXT, exact: bool = False
) -> Any:
    """Forward ``text``; raise when any logit is NaN/inf. Returns the float32 CPU logits.

    The error names the weight tensors holding NaN/inf. NaN weights, or inf weights loaded
    without a lossy cast (``exact``), come from the files: `ModelFolderError` (exit 2). Otherwise
    the precision overflowed: `MergechatError` with a dtype hint.
    """
    logits = probe_logits(model, tokenizer, text)
    if bool(torch.isfinite(logits).all()):
        return logits
    kinds = "NaN" if bool(torch.isnan(logits).any()) else "inf"
    bad = nonfinite_weights(model)
    if not bad:
        raise MergechatError(
            f"weights produce NaN/inf in {dtype}: the first forward pass gave {kinds} logits "
            "although every weight is finite (the activations overflow)",
            hint=_overflow_hint(dtype),
        )
    name, found = bad[0]
    more = f" (and {len(bad) - 1} more tensor{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
    message = (
        f"weights produce NaN/inf in {dtype}: {name} holds {found}{more}; the first forward "
        f"pass gave {kinds} logits"
    )
    if "NaN" in found or exact:
        raise ModelFolderError(
            message,
            hint="the weight files hold NaN/inf values (a broken merge or save); redo the merge "
            "or fetch the model again",
        )
    raise MergechatError(message, hint=_overflow_hint(dtype))


def nonfinite_weights(model: Any) -> list[tuple[str, str]]:
    """``(name, "NaN" | "inf" | "NaN and inf")`` for every parameter that is not finite."""
    found: list[tuple[str, str]] = []
    with torch.inference_mode():
        for name, param in model.named_parameters():
            if param.device.type == "meta" or not param.is_floating_point():
                continue  # offloaded to disk, or not a float
            nan = inf = False
            for chunk in param.detach().reshape(-1).split(_FINITE_CHUNK):
                nan = nan or bool(torch.isnan(chunk).any())
                inf = inf or bool(torch.isinf(chunk).any())
            if nan or inf:
                found.append(
                    (name, " and ".join(k for k, on in (("NaN", nan), ("inf", inf)) if on))
                )
    return found


def _overflow_hint(dtype: DType) -> str:
    if dtype == "float16":
        return "float16 overflows on large merged weights; choose bfloat16 or float32"
    return "the weights on disk may be broken (check the merge), or choose float32"
