"""Time the loaded model's own prefill and decode, compare with the probe's prediction, and find
a safe precision that would make turns clearly faster (said once per model and machine)."""

from __future__ import annotations

import hashlib
import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from mergechat.core.api import MeasuredSpeed
from mergechat.core.detect.capabilities import ProbeResult
from mergechat.core.detect.probe_shape import TURN_NEW_TOKENS, TURN_PROMPT_TOKENS
from mergechat.core.dtypes import DType
from mergechat.core.settings import json_cache, locations

#: Another safe precision is pointed out when its calibrated turn is at least this much faster.
FASTER_HINT: Final[float] = 1.2
#: Decode steps timed (their median is the rate); fewer when one step is slow.
DECODE_STEPS: Final[int] = 6
_SLOW_STEP_S: Final[float] = 1.0


def time_model(model: Any, inputs: dict[str, Any], config: Any) -> tuple[float, float]:
    """(prefill, decode) seconds per token of a short greedy ``generate`` on ``inputs``.

    It runs the path a reply runs (``generate``, its logits processors, a returned cache), so
    timing it also warms the kernels and lazy imports the first reply would otherwise pay for.
    ``config`` should make exactly ``DECODE_STEPS + 1`` new tokens.
    """
    import torch
    from transformers import StoppingCriteriaList

    clock = _TokenClock()
    prompt_tokens = int(inputs["input_ids"].shape[-1])
    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(
            **inputs,
            generation_config=config,
            streamer=clock,
            stopping_criteria=StoppingCriteriaList([_SlowStop(clock)]),
            return_dict_in_generate=True,
        )
    tokens = clock.times[1:]  # the first put is the prompt
    if len(tokens) < 2:
        raise RuntimeError("calibration produced fewer than two tokens")
    steps = [b - a for a, b in itertools.pairwise(tokens)]
    return (tokens[0] - start) / prompt_tokens, statistics.median(steps)


class _TokenClock:
    """A ``generate`` streamer that only notes when the prompt and each new token arrive."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


class _SlowStop:
    """Ends the timing early once a decode step is slower than ``_SLOW_STEP_S``."""

    def __init__(self, clock: _TokenClock) -> None:
        self.clock = clock

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        times = self.clock.times
        slow = len(times) >= 4 and times[-1] - times[-2] > _SLOW_STEP_S
        return torch.full((input_ids.shape[0],), slow, dtype=torch.bool, device=input_ids.device)


def _turn(prefill: float, decode: float) -> float:
    return TURN_PROMPT_TOKENS * prefill + TURN_NEW_TOKENS * decode


def compare(
    dtype: DType,
    measured: tuple[float, float],
    probes: Sequence[ProbeResult],
    safe: Callable[[DType], bool],
) -> MeasuredSpeed:
    """The measured speed beside the prediction, and a clearly faster safe dtype if any.

    Other dtypes' turns are the probe's predictions corrected by what this model showed: the
    prefill by the measured/predicted ratio, the decode by the per-token time the probe did
    not see (framework overhead, the same in every dtype).
    """
    prefill, decode = measured
    mine = next((p for p in probes if p.dtype == dtype), None)
    speed = MeasuredSpeed(1 / prefill, 1 / decode)
    if mine is None or mine.prefill_s is None or mine.decode_s is None:
        return speed
    speed = MeasuredSpeed(1 / prefill, 1 / decode, 1 / mine.prefill_s, 1 / mine.decode_s)
    if not mine.reliable:
        return speed
    scale = prefill / mine.prefill_s
    overhead = max(0.0, decode - mine.decode_s)
    best: tuple[DType, float] | None = None
    for other in probes:
        if other.dtype == dtype or not safe(other.dtype) or other.verdict != "ok":
            continue
        if other.prefill_s is None or other.decode_s is None or not other.reliable:
            continue
        gain = _turn(prefill, decode) / _turn(other.prefill_s * scale, other.decode_s + overhead)
        if gain >= FASTER_HINT and (best is None or gain > best[1]):
            best = (other.dtype, gain)
    if best is None:
        return speed
    return MeasuredSpeed(
        speed.prefill_tokens_per_s,
        speed.decode_tokens_per_s,
        speed.predicted_prefill_tokens_per_s,
        speed.predicted_decode_tokens_per_s,
        faster_dtype=best[0],
        faster_by=best[1],
    )


#: Format of the hints file (``{"version", "entries": {key: when first said}}``).
_HINTS_VERSION: Final[int] = 1


def _hints_file() -> Path:
    return locations.probe_cache_file().with_name("faster_hints.json")


def first_time(model_path: Path, machine: str, dtype: DType) -> bool:
    """True the first time a faster ``dtype`` is pointed out for this model on this machine;
    remembers it, so the next run stays quiet (an unwritable file only means saying it again)."""
    path = _hints_file()
    key = hashlib.sha256(f"{model_path}|{machine}|{dtype}".encode()).hexdigest()[:24]
    seen = json_cache.read_entries(path, _HINTS_VERSION)
    if key in seen:
        return False
    seen[key] = time.time()
    json_cache.write_entries(path, _HINTS_VERSION, seen)
    return True
