"""Which dtype a model runs in on one device: its own when it runs well there, else the fastest
safe one, never one that cannot hold its values; with the reason and notes for the user.

`policy` decides the device (or the spread over several) by asking this what it would pick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Literal

from mergechat.core.detect.capabilities import Capabilities, ChoiceVerdict, DeviceInfo
from mergechat.core.detect.memory_fit import memory_fit
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

#: Another dtype must make turns at least this much faster before a note points it out.
_FASTER_NOTE: Final[float] = 1.1
#: With dtype auto, another safe dtype replaces the model's own when its predicted turn is this
#: much faster: a little for an exact cast (bfloat16 -> float32), clearly for one that rounds.
_EXACT_SWITCH: Final[float] = 1.1
_ROUNDING_SWITCH: Final[float] = 1.3

#: One model's verdicts by (device id, dtype).
Table = dict[tuple[str, DType], ChoiceVerdict]


def _speed_key(v: ChoiceVerdict) -> float:
    return v.probe.seconds if v.probe is not None and v.probe.seconds else float("inf")


def _fastest_ok(
    table: Table, than: ChoiceVerdict, allowed: Callable[[DType], bool] = lambda _t: True
) -> ChoiceVerdict | None:
    """The fastest ``ok`` dtype on ``than``'s device other than ``than``'s, among ``allowed``."""
    rivals = [
        table[(than.device, t)]
        for t in DTYPES
        if t != than.dtype and allowed(t) and table[(than.device, t)].verdict == "ok"
    ]
    return min(rivals, key=_speed_key, default=None)


@dataclass(frozen=True)
class Pick:
    """A dtype chosen on one device, with the dtype half of the reason."""

    choice: ChoiceVerdict
    why: str
    warnings: tuple[str, ...] = ()


class DtypeChooser:
    """Which dtype on a given device: the rules over one model's device x dtype verdict table."""

    def __init__(
        self, info: ModelInfo, caps: Capabilities, tokens: int, float16_safe: bool | None
    ) -> None:
        self.info, self.caps, self.tokens = info, caps, tokens
        self.native = info.native_dtype
        self.float16_safe = float16_safe
        merge_dtype = info.merge is not None and info.merge.effective_dtype is not None
        self.kind = "merge" if merge_dtype else "model"
        self.table: Table = {}
        #: The same verdicts with memory fit ignored (for spreading over several devices).
        self.probe_only: Table = {}
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
        self, device: DeviceInfo, dtype: DType | Literal["auto"], table: Table | None = None
    ) -> Pick:
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
        return Pick(best, why, (f"{best.dtype} on {device.id}: {best.text}",))

    def _faster_safe(self, native: ChoiceVerdict, table: Table) -> ChoiceVerdict | None:
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

    def _user_pick(self, choice: ChoiceVerdict) -> Pick:
        """The user's dtype, with warnings when it is slow, unsupported, too big or unsafe."""
        warns = []
        if choice.verdict != "ok":
            warns.append(f"{choice.dtype} on {choice.device}: {choice.text}")
        if not self.safe(choice.dtype):
            warns.append(
                f"{choice.dtype} cannot hold the largest {self.native} values: a {self.kind} "
                f"saved in {self.native} can overflow to inf"
            )
        return Pick(choice, f"{choice.dtype}: chosen by the user", tuple(warns))

    def _with_notes(
        self,
        choice: ChoiceVerdict,
        why: str,
        table: Table,
        warns: tuple[str, ...] = (),
        *,
        said_rounding: bool = False,
        quiet: bool = False,
    ) -> Pick:
        """Say when the pick rounds the weights (unless ``why`` said so already), and when another
        dtype measured clearly faster (a faster float16 is pointed out, never switched to
        silently)."""
        notes = list(warns)
        if not said_rounding and not is_exact_cast(self.native, choice.dtype):
            notes.append(f"{choice.dtype} rounds the {self.native} weights (fewer mantissa bits)")
        fastest = None if quiet else _fastest_ok(table, choice)
        if fastest is None or _speed_key(choice) < _FASTER_NOTE * _speed_key(fastest):
            return Pick(choice, why, tuple(notes))
        other = fastest.dtype
        head = f"{other} turns measured {_speed_key(choice) / _speed_key(fastest):.1f}x faster"
        flag = f"pick it with --dtype {other}"
        if not self.safe(other):
            notes.append(f"{head} but a {self.native} {self.kind} can overflow in {other}; {flag}")
        elif is_exact_cast(self.native, other):
            notes.append(f"{head} and holds every {self.native} value exactly; {flag}")
        else:
            notes.append(f"{head} but rounds the {self.native} weights; {flag}")
        return Pick(choice, why, tuple(notes))
