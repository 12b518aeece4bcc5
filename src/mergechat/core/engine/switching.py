"""Switch the loaded model's precision: an exact in-memory cast, or a reload from disk."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Literal

from mergechat.core.api import EngineEvent, SwitchFailed, SwitchFinished, SwitchStarted
from mergechat.core.dtypes import DType, is_exact_cast, torch_dtype
from mergechat.core.engine.error_translation import translate
from mergechat.core.engine.fidelity import PROBE_TEXT, compare_logits, probe_logits
from mergechat.core.engine.finite_check import check_finite
from mergechat.core.engine.loader import LoadedModel, load_weights, release
from mergechat.core.engine.model_facts import holds_disk_values, read_dtype
from mergechat.core.errors import MergechatError

Method = Literal["cast", "reload"]
_USER_CHOICE = "chosen by the user"
Emit = Callable[[EngineEvent], None]


def choose_method(loaded: LoadedModel, target: DType) -> Method:
    """``cast`` when casting in memory gives exactly what loading ``target`` from disk would.

    That holds whenever the current weights still equal the disk values: ``from_pretrained(dtype=)``
    rounds the stored tensors with the same ``Tensor.to``, so a float32 → bfloat16 cast is
    bit-identical to a bfloat16 load (checked for every direction between the three dtypes).
    Otherwise (an earlier lossy cast, an offloaded model that cannot ``.to``, modules transformers
    keeps in float32, a GGUF file dequantised by its own code) the weights come from disk again.
    """
    if loaded.state.offloaded or not loaded.exact or _keeps_fp32_modules(loaded.model, target):
        return "reload"
    if loaded.info.weights_format == "gguf" and not holds_disk_values(loaded.info, target):
        return "reload"
    return "cast"


def cast_weights(model: Any, dtype: DType) -> None:
    """Cast parameters and persistent buffers in place, as ``from_pretrained(dtype=)`` leaves them.

    ``model.to(dtype)`` would also cast non-persistent buffers such as RoPE's ``inv_freq``, which
    transformers computes and keeps in float32; a bfloat16 ``inv_freq`` changes the outputs.
    """
    target = torch_dtype(dtype)
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.is_floating_point():
                param.data = param.data.to(target)
        for name, buffer in module.named_buffers(recurse=False):
            if buffer.is_floating_point() and name not in module._non_persistent_buffers_set:
                module._buffers[name] = buffer.to(target)


def _keeps_fp32_modules(model: Any, target: DType) -> bool:
    # transformers keeps these modules in float32 for fp16 (and, strict, bf16) loads; a plain
    # cast would not, so such models switch by reload to get exactly what a load gives.
    strict = getattr(model, "_keep_in_fp32_modules_strict", None)
    loose = getattr(model, "_keep_in_fp32_modules", None)
    return bool(strict and target != "float32") or bool(loose and target == "float16")


def switch(
    loaded: LoadedModel, target: DType, *, emit: Emit
) -> tuple[LoadedModel | None, SwitchFinished | SwitchFailed]:
    """Move ``loaded`` to ``target``; emit SwitchStarted and return the model held now + outcome.

    The model is the switched one, the restored previous precision after a failure, or None
    when even restoring failed (then nothing is loaded). The caller records the model before
    emitting the outcome, so whoever sees the event also sees the new state.
    """
    source = loaded.state.dtype
    method = choose_method(loaded, target)
    emit(SwitchStarted(source, target, method))
    started = time.perf_counter()
    if source == target:
        return loaded, SwitchFinished(loaded.state, method, 0.0, None)
    reference = loaded.reference_logits
    if reference is None:
        reference = probe_logits(loaded.model, loaded.tokenizer)
    try:
        if method == "cast":
            switched = _cast(loaded, target)
            logits = check_finite(switched.model, switched.tokenizer, target, text=PROBE_TEXT)
            switched = dataclasses.replace(switched, reference_logits=logits)
        else:
            switched = _reload(loaded, target)  # its load ran the same check on the same text
            logits = switched.reference_logits
    except BaseException as exc:  # even a SystemExit from model code: never leave half-cast weights
        error = translate(exc, dtype=target, device=loaded.state.device)
        restored, note = _restore(loaded, source, target, method)
        state = restored.state if restored else None
        return restored, SwitchFailed(error.message + note, state, error.hint)
    fidelity = compare_logits(reference, logits, reference=source, target=target)
    seconds = time.perf_counter() - started
    return switched, SwitchFinished(switched.state, method, seconds, fidelity)


def _cast(loaded: LoadedModel, target: DType) -> LoadedModel:
    """Cast in place; the model object stays, only its parameters change dtype."""
    cast_weights(loaded.model, target)
    return _with_dtype(loaded, target)


def _reload(loaded: LoadedModel, target: DType) -> LoadedModel:
    """Free the current weights, then load them from disk in ``target`` on the same placement."""
    rec = dataclasses.replace(loaded.recommendation, dtype=target)
    release(loaded)
    fresh = load_weights(loaded.info, rec, trust_remote_code=loaded.trust_remote_code)
    state = dataclasses.replace(fresh.state, reason=_USER_CHOICE)
    return dataclasses.replace(
        fresh,
        state=state,
        warnings=loaded.warnings,
        speed_probes=loaded.speed_probes,
        safe_dtypes=loaded.safe_dtypes,
        machine=loaded.machine,
    )


def _restore(
    loaded: LoadedModel, source: DType, target: DType, method: Method
) -> tuple[LoadedModel | None, str]:
    """Put the model back in ``source`` after a failed switch; a note when that failed too."""
    try:
        if method == "cast" and loaded.model is not None and is_exact_cast(source, target):
            # The target held every source value, so casting back restores them exactly.
            cast_weights(loaded.model, source)
            return loaded, ""
        return _reload(loaded, source), ""
    except Exception as exc:
        release(loaded)
        return None, f"; restoring {source} failed too ({translate(exc).message}): model unloaded"


def _with_dtype(loaded: LoadedModel, target: DType) -> LoadedModel:
    # The state reports what the parameters really are after the cast, not what was asked.
    dtype = read_dtype(loaded.model)
    params = loaded.model.parameters()
    mixed = sorted({str(p.dtype).removeprefix("torch.") for p in params if p.is_floating_point()})
    if len(mixed) > 1:
        # A cast that stopped part-way; the caller casts everything back.
        raise MergechatError(f"the cast left the weights in mixed dtypes ({', '.join(mixed)})")
    state = dataclasses.replace(loaded.state, dtype=dtype, reason=_USER_CHOICE)
    return dataclasses.replace(
        loaded, state=state, exact=loaded.exact and holds_disk_values(loaded.info, dtype)
    )
