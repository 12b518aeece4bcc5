"""Pick a device and dtype for a model from the measured probes and the memory fit, with reasons."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Literal

from mergechat.core.capabilities import (
    Assessment,
    Capabilities,
    ChoiceVerdict,
    DeviceInfo,
    FitResult,
    ProbeResult,
    Recommendation,
)
from mergechat.core.devices import parse_device
from mergechat.core.dtypes import DTYPES, ITEMSIZE, DType, has_range_of, is_exact_cast
from mergechat.core.model_info import ModelInfo

#: Context assumed for the KV cache when the caller gives none (capped model maximum).
DEFAULT_CONTEXT_TOKENS: Final[int] = 4096
#: Memory beyond weights + KV cache: runtime, activations, allocator slack.
OVERHEAD_BYTES: Final[int] = 256 * 2**20
OVERHEAD_SHARE: Final[float] = 0.05
#: Another dtype must be at least this much faster before a note points it out.
_FASTER_NOTE: Final[float] = 1.1
#: With dtype auto, a dtype with the model's range (bfloat16 for a float32 model) replaces the
#: model's own dtype when its probe is at least this much faster: on an AVX512-BF16 CPU bfloat16
#: decodes 1.4-1.6x faster than float32, a gap users feel; below it, exact weights win.
_SAME_RANGE_SWITCH: Final[float] = 1.3
_NATIVE_FLAGS: Final[dict[DType, tuple[str, ...]]] = {
    "bfloat16": ("amx_bf16", "avx512_bf16", "bf16"),
    "float16": ("amx_fp16", "avx512_fp16", "asimdhp"),
}


def format_bytes(size: int) -> str:
    """``9.1 GiB`` (or ``300 MiB`` below one GiB)."""
    if size < 2**30:
        return f"{size / 2**20:.0f} MiB"
    return f"{size / 2**30:.1f} GiB"


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


def _fit(info: ModelInfo, device: DeviceInfo, dtype: DType, tokens: int) -> FitResult:
    needed = needed_bytes(info, dtype, tokens)
    free = device.free_bytes
    fits = None if needed is None or free is None else needed <= free
    return FitResult(device.id, dtype, needed, free, fits)


def _verdict(device: DeviceInfo, probe: ProbeResult | None, fit: FitResult) -> ChoiceVerdict:
    """Combine probe and fit: unsupported beats does not fit, which beats slow."""
    dtype = fit.dtype
    if probe is None:
        return ChoiceVerdict(device.id, dtype, "unsupported", "unsupported: not probed", None, fit)
    if probe.verdict == "unsupported":
        text = f"unsupported: {probe.error}" if probe.error else "unsupported"
        return ChoiceVerdict(device.id, dtype, "unsupported", text, probe, fit)
    if fit.fits is False:
        assert fit.needed_bytes is not None and fit.free_bytes is not None
        needed, free = format_bytes(fit.needed_bytes), format_bytes(fit.free_bytes)
        text = f"does not fit: {needed} needed, {free} free"
        return ChoiceVerdict(device.id, dtype, "does not fit", text, probe, fit)
    if probe.verdict == "slow":
        text = f"slow {probe.factor:.1f}x" if probe.factor else "slow"
        return ChoiceVerdict(device.id, dtype, "slow", text, probe, fit)
    return ChoiceVerdict(device.id, dtype, "ok", "ok", probe, fit)


def _speed_key(v: ChoiceVerdict) -> float:
    return v.probe.seconds if v.probe is not None and v.probe.seconds else float("inf")


def _fastest_ok(
    table: _Table, than: ChoiceVerdict, allowed: Callable[[DType], bool] = lambda _t: True
) -> ChoiceVerdict | None:
    """The fastest ``ok`` dtype on ``than``'s device other than ``than``'s, among ``allowed``."""
    rivals = [
        table[(than.device, t)]
        for t in DTYPES
        if t != than.dtype and allowed(t) and table[(than.device, t)].verdict == "ok"
    ]
    return min(rivals, key=_speed_key, default=None)


@dataclass(frozen=True)
class _Pick:
    """A dtype chosen on one device, with the dtype half of the reason."""

    choice: ChoiceVerdict
    why: str
    warnings: tuple[str, ...] = ()


_Table = dict[tuple[str, DType], ChoiceVerdict]


class _Chooser:
    """The decision rules over one model's verdict table."""

    def __init__(self, info: ModelInfo, caps: Capabilities, tokens: int) -> None:
        self.info, self.caps, self.tokens = info, caps, tokens
        self.native = info.native_dtype
        merge_dtype = info.merge is not None and info.merge.effective_dtype is not None
        self.kind = "merge" if merge_dtype else "model"
        self.table: _Table = {}
        #: The same verdicts with memory fit ignored (for spreading over several devices).
        self.probe_only: _Table = {}
        for d in caps.devices:
            for t in DTYPES:
                fit = _fit(info, d, t, tokens)
                self.table[(d.id, t)] = _verdict(d, caps.probe(d.id, t), fit)
                self.probe_only[(d.id, t)] = _verdict(
                    d, caps.probe(d.id, t), replace(fit, fits=None)
                )

    def verdicts(self) -> tuple[ChoiceVerdict, ...]:
        """Every device x dtype verdict, devices in detection order, dtypes in `DTYPES` order."""
        return tuple(self.table.values())

    def pick(
        self, device: DeviceInfo, dtype: DType | Literal["auto"], table: _Table | None = None
    ) -> _Pick:
        """The dtype for ``device``: the user's, else native when ok, else the fastest safe ok
        (then slow) one; float16 is never picked for a model whose range it lacks."""
        table = self.table if table is None else table
        if dtype != "auto":
            return self._user_pick(table[(device.id, dtype)])
        native = table[(device.id, self.native)]
        if native.verdict == "ok":
            faster = self._faster_with_range(native, table)
            if faster is not None:
                ratio = _speed_key(native) / _speed_key(faster)
                rounds = "" if is_exact_cast(self.native, faster.dtype) else ", rounds the weights"
                why = (
                    f"{faster.dtype}: {ratio:.1f}x faster than {self.native} (the {self.kind}'s "
                    f"dtype) on {_where(device)}, same range{rounds}; --dtype {self.native} "
                    "keeps the weights as stored"
                )
                return self._with_notes(faster, why, table, said_rounding=True)
            why = f"{self.native}: the {self.kind}'s dtype, {_native_phrase(device, self.native)}"
            return self._with_notes(native, why, table)
        safe = [table[(device.id, t)] for t in DTYPES if has_range_of(t, self.native)]
        for wanted in ("ok", "slow"):
            found = sorted((v for v in safe if v.verdict == wanted), key=_speed_key)
            if found:
                best = found[0]
                if best is native:  # slow, yet the only safe dtype that fits
                    why = (
                        f"{self.native}: the {self.kind}'s dtype, {native.text} on "
                        f"{_where(device)} but no other safe dtype fits"
                    )
                else:
                    why = (
                        f"{best.dtype}: {self.native} (the {self.kind}'s dtype) "
                        f"{_problem(native)} on {_where(device)}; {best.dtype} is the fastest "
                        "safe dtype that works"
                    )
                warns = () if wanted == "ok" else (f"{best.dtype} on {device.id}: {best.text}",)
                return self._with_notes(best, why, table, warns)
        # Nothing safe runs and fits: the native dtype unless it cannot run at all, said loudly.
        runnable = [v for v in safe if v.verdict != "unsupported"]
        best = native if native in runnable or not runnable else runnable[0]
        why = f"{best.dtype}: no safe dtype runs and fits on {_where(device)}"
        return _Pick(best, why, (f"{best.dtype} on {device.id}: {best.text}",))

    def _faster_with_range(self, native: ChoiceVerdict, table: _Table) -> ChoiceVerdict | None:
        """An ``ok`` dtype with the native dtype's range that probed clearly faster, if any."""
        best = _fastest_ok(table, native, lambda t: has_range_of(t, self.native))
        if best is None or _speed_key(native) < _SAME_RANGE_SWITCH * _speed_key(best):
            return None
        return best

    def _user_pick(self, choice: ChoiceVerdict) -> _Pick:
        """The user's dtype, with warnings when it is slow, unsupported, too big or unsafe."""
        warns = []
        if choice.verdict != "ok":
            warns.append(f"{choice.dtype} on {choice.device}: {choice.text}")
        if not has_range_of(choice.dtype, self.native):
            warns.append(
                f"{choice.dtype} cannot hold the largest {self.native} values: a {self.kind} "
                f"saved in {self.native} can overflow to inf"
            )
        return _Pick(choice, f"{choice.dtype}: chosen by the user", tuple(warns))

    def _with_notes(
        self,
        choice: ChoiceVerdict,
        why: str,
        table: _Table,
        warns: tuple[str, ...] = (),
        *,
        said_rounding: bool = False,
    ) -> _Pick:
        """Say when the pick rounds the weights (unless ``why`` said so already), and when another
        dtype measured clearly faster (a faster float16 is pointed out, never switched to
        silently)."""
        notes = list(warns)
        if not said_rounding and not is_exact_cast(self.native, choice.dtype):
            notes.append(f"{choice.dtype} rounds the {self.native} weights (fewer mantissa bits)")
        fastest = _fastest_ok(table, choice)
        if fastest is None or _speed_key(choice) < _FASTER_NOTE * _speed_key(fastest):
            return _Pick(choice, why, tuple(notes))
        other = fastest.dtype
        head = f"{other} measured {_speed_key(choice) / _speed_key(fastest):.1f}x faster"
        flag = f"pick it with --dtype {other}"
        if not has_range_of(other, self.native):
            notes.append(f"{head} but a {self.native} {self.kind} can overflow in {other}; {flag}")
        elif is_exact_cast(self.native, other):
            notes.append(f"{head} and holds every {self.native} value exactly; {flag}")
        else:
            notes.append(f"{head} but rounds the {self.native} weights; {flag}")
        return _Pick(choice, why, tuple(notes))

    def recommend(self, spec: str, dtype: DType | Literal["auto"]) -> Recommendation:
        """The user's device, else the first GPU where the pick is ok (then slow), else several
        GPUs (+ CPU RAM) through accelerate's device_map="auto", else the CPU."""
        if spec != "auto":
            device = self.caps.device(spec)
            assert device is not None  # parse_device checked it
            return _recommendation(device, self.pick(device, dtype), None, "")
        gpus = [d for d in self.caps.devices if d.kind != "cpu"]
        for wanted in ("ok", "slow"):
            for gpu in gpus:
                pick = self.pick(gpu, dtype)
                if pick.choice.verdict == wanted:
                    how = "runs and fits" if wanted == "ok" else "fits (and runs, slowly)"
                    where = f"{gpu.id} ({gpu.name}) is the first GPU where it {how}"
                    return _recommendation(gpu, pick, None, where)
        spread = self._spread(dtype)
        if spread is not None:
            return spread
        cpu = self.caps.device("cpu") or self.caps.devices[0]
        pick = self.pick(cpu, dtype)
        where = ""
        if gpus:
            first = self.pick(gpus[0], dtype).choice
            where = f"no GPU can take it ({first.device} {first.dtype}: {first.text})"
        rec = _recommendation(cpu, pick, None, where)
        if pick.choice.verdict == "does not fit":
            note = "the model does not fit in the free memory of any device; loading may fail"
            return replace(rec, warnings=(*rec.warnings, note))
        return rec

    def _spread(self, dtype: DType | Literal["auto"]) -> Recommendation | None:
        """device_map="auto" over the same-kind GPUs, plus CPU RAM if needed, when no single
        GPU has room; the dtype is picked on the first GPU ignoring memory, runnable on all."""
        gpus = [d for d in self.caps.devices if d.kind in ("cuda", "xpu")]
        gpus = [d for d in gpus if d.kind == gpus[0].kind] if gpus else []
        if not gpus or any(d.free_bytes is None for d in gpus):
            return None
        pick = self.pick(gpus[0], dtype, self.probe_only)
        chosen = pick.choice.dtype
        if any(self.probe_only[(g.id, chosen)].verdict == "unsupported" for g in gpus):
            return None
        needed = needed_bytes(self.info, chosen, self.tokens)
        if needed is None:
            return None
        needed += OVERHEAD_BYTES * (len(gpus) - 1)  # one runtime context per extra GPU
        gpu_free = sum(d.free_bytes or 0 for d in gpus)
        cpu = self.caps.device("cpu")
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
    device: DeviceInfo, pick: _Pick, device_map: str | None, where: str
) -> Recommendation:
    reason = f"{pick.why}; {where}" if where else pick.why
    return Recommendation(device.id, pick.choice.dtype, device_map, reason, pick.warnings)


def _native_phrase(device: DeviceInfo, dtype: DType) -> str:
    """``runs natively on this CPU (avx512_bf16)`` or ``measured ok on NVIDIA A100``."""
    if device.kind == "cpu":
        flags = [f for f in _NATIVE_FLAGS.get(dtype, ()) if f in device.features]
        if flags:
            return f"runs natively on this CPU ({', '.join(flags)})"
        return "measured ok on this CPU"
    if dtype == "bfloat16" and device.bf16_native:
        return f"runs natively on {device.id} ({device.name})"
    return f"measured ok on {device.id} ({device.name})"


def _where(device: DeviceInfo) -> str:
    return "this CPU" if device.kind == "cpu" else device.id


def _problem(v: ChoiceVerdict) -> str:
    """``is slow (4.2x)``, ``is unsupported``, ``does not fit``: the verdict as a clause."""
    if v.verdict == "slow":
        factor = v.probe.factor if v.probe is not None else None
        return f"is slow ({factor:.1f}x)" if factor else "is slow"
    return "does not fit" if v.verdict == "does not fit" else "is unsupported"


def assess(
    info: ModelInfo,
    caps: Capabilities,
    *,
    device: str = "auto",
    dtype: DType | Literal["auto"] = "auto",
    context_tokens: int | None = None,
) -> Assessment:
    """Verdicts for every device x dtype for ``info`` and the recommended choice, with reasons.

    ``device`` is validated against ``caps`` (`DeviceUnavailableError` when absent); an explicit
    ``device`` or ``dtype`` always wins, with warnings when its verdict is not ``ok``.
    """
    spec = parse_device(device, caps.devices)
    tokens = context_tokens_for(info, context_tokens)
    chooser = _Chooser(info, caps, tokens)
    general = []
    if needed_bytes(info, info.native_dtype, tokens) is None:
        general.append("the model's size is unknown, so memory fit was not checked")
    elif info.kv_cache_bytes(info.native_dtype, tokens) is None:
        general.append(
            "the KV cache size is unknown (no layer/head counts); fit counts weights only"
        )
    return Assessment(chooser.verdicts(), chooser.recommend(spec, dtype), tuple(general))
