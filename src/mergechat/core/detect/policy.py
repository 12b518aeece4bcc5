"""Pick a device and dtype for a model from the measured probes and the memory fit, with reasons.

The device (one GPU, several through device_map="auto", or the CPU) is decided here, asking
`dtype_pick.DtypeChooser` which dtype it would pick on each; `assess` is the entry point.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from mergechat.core.detect.capabilities import Assessment, Capabilities, DeviceInfo, Recommendation
from mergechat.core.detect.devices import parse_device
from mergechat.core.detect.dtype_pick import DtypeChooser, Pick
from mergechat.core.detect.fidelity_cache import float16_safety
from mergechat.core.detect.memory_fit import OVERHEAD_BYTES, context_tokens_for, needed_bytes
from mergechat.core.dtypes import DTYPES, DType
from mergechat.core.model.info import ModelInfo
from mergechat.core.text import format_bytes


def _recommend(chooser: DtypeChooser, spec: str, dtype: DType | Literal["auto"]) -> Recommendation:
    """The user's device, else the first GPU where the pick is ok (then slow), else several
    GPUs (+ CPU RAM) through accelerate's device_map="auto", else the CPU."""
    if spec != "auto":
        device = chooser.caps.device(spec)
        assert device is not None  # parse_device checked it
        return _recommendation(device, chooser.pick(device, dtype), None, "")
    gpus = [d for d in chooser.caps.devices if d.kind != "cpu"]
    for wanted in ("ok", "slow"):
        for gpu in gpus:
            pick = chooser.pick(gpu, dtype)
            if pick.choice.verdict == wanted:
                how = "runs and fits" if wanted == "ok" else "fits (and runs, slowly)"
                where = f"{gpu.id} ({gpu.name}) is the first GPU where it {how}"
                return _recommendation(gpu, pick, None, where)
    spread = _spread(chooser, dtype)
    if spread is not None:
        return spread
    cpu = chooser.caps.device("cpu") or chooser.caps.devices[0]
    pick = chooser.pick(cpu, dtype)
    where = ""
    if gpus:
        first = chooser.pick(gpus[0], dtype).choice
        where = f"no GPU can take it ({first.device} {first.dtype}: {first.text})"
    rec = _recommendation(cpu, pick, None, where)
    if pick.choice.verdict == "does not fit":
        note = "the model does not fit in the free memory of any device; loading may fail"
        return replace(rec, warnings=(*rec.warnings, note))
    return rec


def _spread(chooser: DtypeChooser, dtype: DType | Literal["auto"]) -> Recommendation | None:
    """device_map="auto" over the same-kind GPUs, plus CPU RAM if needed, when no single
    GPU has room; the dtype is picked on the first GPU ignoring memory, runnable on all."""
    gpus = [d for d in chooser.caps.devices if d.kind in ("cuda", "xpu")]
    gpus = [d for d in gpus if d.kind == gpus[0].kind] if gpus else []
    if not gpus or any(d.free_bytes is None for d in gpus):
        return None
    pick = chooser.pick(gpus[0], dtype, chooser.probe_only)
    chosen = pick.choice.dtype
    if any(chooser.probe_only[(g.id, chosen)].verdict == "unsupported" for g in gpus):
        return None
    needed = needed_bytes(chooser.info, chosen, chooser.tokens)
    if needed is None:
        return None
    needed += OVERHEAD_BYTES * (len(gpus) - 1)  # one runtime context per extra GPU
    gpu_free = sum(d.free_bytes or 0 for d in gpus)
    cpu = chooser.caps.device("cpu")
    cpu_free = (cpu.free_bytes or 0) if cpu is not None else 0
    if needed > gpu_free + cpu_free:
        return None
    names = ", ".join(d.id for d in gpus) + (" and CPU RAM" if needed > gpu_free else "")
    where = (
        f"no single GPU has room for {format_bytes(needed)}; "
        f'device_map="auto" spreads it over {names}'
    )
    return _recommendation(gpus[0], pick, "auto", where)


def _recommendation(
    device: DeviceInfo, pick: Pick, device_map: str | None, where: str
) -> Recommendation:
    reason = f"{pick.why}; {where}" if where else pick.why
    return Recommendation(device.id, pick.choice.dtype, device_map, reason, pick.warnings)


def assess(
    info: ModelInfo,
    caps: Capabilities,
    *,
    device: str = "auto",
    dtype: DType | Literal["auto"] = "auto",
    context_tokens: int | None = None,
    float16_safe: bool | None = None,
) -> Assessment:
    """Verdicts for every device x dtype for ``info`` and the recommended choice, with reasons.

    ``device`` is validated against ``caps`` (`DeviceUnavailableError` when absent); an explicit
    ``device`` or ``dtype`` always wins, with warnings when its verdict is not ``ok``.
    ``float16_safe`` is the fidelity audit's finding for a model whose dtype float16 cannot
    hold by range; None reads what ``doctor --fidelity`` remembered for this model (never
    audited: float16 stays unsafe for it).
    """
    spec = parse_device(device, caps.devices)
    tokens = context_tokens_for(info, context_tokens)
    if float16_safe is None:
        safety = float16_safety(info)
        float16_safe = safety.safe if safety is not None else None
    chooser = DtypeChooser(info, caps, tokens, float16_safe)
    general = []
    if needed_bytes(info, info.native_dtype, tokens) is None:
        general.append("the model's size is unknown, so memory fit was not checked")
    elif info.kv_cache_bytes(info.native_dtype, tokens) is None:
        general.append(
            "the KV cache size is unknown (no layer/head counts); fit counts weights only"
        )
    safe = tuple(t for t in DTYPES if chooser.safe(t))
    return Assessment(chooser.verdicts(), _recommend(chooser, spec, dtype), tuple(general), safe)
