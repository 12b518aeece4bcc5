"""Pick a device and dtype for a model from the measured probes and the memory fit, with reasons."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Literal

from mergechat.core.detect.capabilities import (
    Assessment,
    Capabilities,
    ChoiceVerdict,
    DeviceInfo,
    Recommendation,
)
from mergechat.core.detect.devices import parse_device
from mergechat.core.detect.fidelity_cache import float16_safety
from mergechat.core.detect.memory_fit import (
    OVERHEAD_BYTES,
    context_tokens_for,
    memory_fit,
    needed_bytes,
)
from mergechat.core.detect.verdicts import (
    BUSY_TEXT,
    choice_verdict,
    fastest_dtype,
    native_phrase,
    problem_clause,
    where,
)
from mergechat.core.dtypes import DTYPES, DType, has_range_of, is_exact_cast
from mergechat.core.model.info import ModelInfo
from mergechat.core.text import format_bytes

#: Another dtype must make turns at least this much faster before a note points it out.
_FASTER_NOTE: Final[float] = 1.1
#: With dtype auto, another safe dtype replaces the model's own when its predicted turn is this
#: much faster: a little for an exact cast (bfloat16 -> float32), clearly for one that rounds.
_EXACT_SWITCH: Final[float] = 1.1
_ROUNDING_SWITCH: Final[float] = 1.3


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

    def __init__(
        self, info: ModelInfo, caps: Capabilities, tokens: int, float16_safe: bool | None
    ) -> None:
        self.info, self.caps, self.tokens = info, caps, tokens
        self.native = info.native_dtype
        self.float16_safe = float16_safe
        merge_dtype = info.merge is not None and info.merge.effective_dtype is not None
        self.kind = "merge" if merge_dtype else "model"
        self.table: _Table = {}
        #: The same verdicts with memory fit ignored (for spreading over several devices).
        self.probe_only: _Table = {}
        for d in caps.devices:
            fastest = fastest_dtype([p for p in caps.probes if p.device == d.id])
            for t in DTYPES:
                fit, probe = memory_fit(info, d, t, tokens), caps.probe(d.id, t)
                self.table[(d.id, t)] = choice_verdict(d, probe, fit, fastest)
                self.probe_only[(d.id, t)] = choice_verdict(
                    d, probe, replace(fit, fits=None), fastest
                )

    def safe(self, dtype: DType) -> bool:
        """Can ``dtype`` hold the model's values: by range, or float16 measured to fit them."""
        if has_range_of(dtype, self.native):
            return True
        return dtype == "float16" and self.float16_safe is True

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
        if native.verdict == "ok" and native.probe is not None and not native.probe.reliable:
            why = (
                f"{self.native}: the {self.kind}'s dtype; speeds were {BUSY_TEXT} (other "
                "programs used the CPU during the probe), so it keeps its own precision"
            )
            return self._with_notes(native, why, table, quiet=True)
        if native.verdict == "ok":
            faster = self._faster_safe(native, table)
            if faster is not None:
                ratio = _speed_key(native) / _speed_key(faster)
                rounds = "" if is_exact_cast(self.native, faster.dtype) else ", rounds the weights"
                why = (
                    f"{faster.dtype}: turns {ratio:.1f}x faster than in {self.native} (the "
                    f"{self.kind}'s dtype) on {where(device)}, "
                    f"{self._range_phrase(faster.dtype)}{rounds}; --dtype {self.native} keeps "
                    "the weights as stored"
                )
                return self._with_notes(faster, why, table, said_rounding=True)
            why = f"{self.native}: the {self.kind}'s dtype, {native_phrase(device, self.native)}"
            return self._with_notes(native, why, table)
        safe = [table[(device.id, t)] for t in DTYPES if self.safe(t)]
        for wanted in ("ok", "slow"):
            found = sorted((v for v in safe if v.verdict == wanted), key=_speed_key)
            if found:
                best = found[0]
                if best is native:  # slow, yet the only safe dtype that fits
                    why = (
                        f"{self.native}: the {self.kind}'s dtype, {native.text} on "
                        f"{where(device)} but no other safe dtype fits"
                    )
                else:
                    why = (
                        f"{best.dtype}: {self.native} (the {self.kind}'s dtype) "
                        f"{problem_clause(native)} on {where(device)}; {best.dtype} is the fastest "
                        "safe dtype that works"
                    )
                warns = () if wanted == "ok" else (f"{best.dtype} on {device.id}: {best.text}",)
                return self._with_notes(best, why, table, warns)
        # Nothing safe runs and fits: the native dtype unless it cannot run at all, said loudly.
        runnable = [v for v in safe if v.verdict != "unsupported"]
        best = native if native in runnable or not runnable else runnable[0]
        why = f"{best.dtype}: no safe dtype runs and fits on {where(device)}"
        return _Pick(best, why, (f"{best.dtype} on {device.id}: {best.text}",))

    def _faster_safe(self, native: ChoiceVerdict, table: _Table) -> ChoiceVerdict | None:
        """An ``ok``, safe dtype whose turns are predicted clearly faster than native's, if any."""
        best = _fastest_ok(table, native, self.safe)
        if best is None:
            return None
        exact = is_exact_cast(self.native, best.dtype)
        needed = _EXACT_SWITCH if exact else _ROUNDING_SWITCH
        return best if _speed_key(native) >= needed * _speed_key(best) else None

    def _range_phrase(self, dtype: DType) -> str:
        if has_range_of(dtype, self.native):
            return "same range"
        return "its values measured to fit float16 (doctor --fidelity)"

    def _user_pick(self, choice: ChoiceVerdict) -> _Pick:
        """The user's dtype, with warnings when it is slow, unsupported, too big or unsafe."""
        warns = []
        if choice.verdict != "ok":
            warns.append(f"{choice.dtype} on {choice.device}: {choice.text}")
        if not self.safe(choice.dtype):
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
        quiet: bool = False,
    ) -> _Pick:
        """Say when the pick rounds the weights (unless ``why`` said so already), and when another
        dtype measured clearly faster (a faster float16 is pointed out, never switched to
        silently)."""
        notes = list(warns)
        if not said_rounding and not is_exact_cast(self.native, choice.dtype):
            notes.append(f"{choice.dtype} rounds the {self.native} weights (fewer mantissa bits)")
        fastest = None if quiet else _fastest_ok(table, choice)
        if fastest is None or _speed_key(choice) < _FASTER_NOTE * _speed_key(fastest):
            return _Pick(choice, why, tuple(notes))
        other = fastest.dtype
        head = f"{other} turns measured {_speed_key(choice) / _speed_key(fastest):.1f}x faster"
        flag = f"pick it with --dtype {other}"
        if not self.safe(other):
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
    chooser = _Chooser(info, caps, tokens, float16_safe)
    general = []
    if needed_bytes(info, info.native_dtype, tokens) is None:
        general.append("the model's size is unknown, so memory fit was not checked")
    elif info.kv_cache_bytes(info.native_dtype, tokens) is None:
        general.append(
            "the KV cache size is unknown (no layer/head counts); fit counts weights only"
        )
    safe = tuple(t for t in DTYPES if chooser.safe(t))
    return Assessment(chooser.verdicts(), chooser.recommend(spec, dtype), tuple(general), safe)
