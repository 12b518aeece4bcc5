"""Calibrate a freshly loaded or switched model with a short chat reply: its measured speed goes
on its state, and the kernels the first real reply runs are warm."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from mergechat.core.api import LoadProgress
from mergechat.core.engine.calibration import DECODE_STEPS, compare, first_time, time_model
from mergechat.core.engine.chat_prompt import build_prompt
from mergechat.core.engine.fidelity import PROBE_TEXT
from mergechat.core.engine.generation import generation_config
from mergechat.core.engine.loader import LoadedModel
from mergechat.core.settings.generation import GenerationSettings

_log = logging.getLogger(__name__)
#: Where the timed reply sits on the load's 0..1 progress scale (after the NaN/inf check).
_PROGRESS: float = 0.96


def calibrated(
    loaded: LoadedModel, progress: Callable[[LoadProgress], None] | None = None
) -> LoadedModel:
    """``loaded`` with `ModelState.speed` measured; a failure only leaves it unmeasured."""
    model = loaded.model
    if model is None:
        return loaded
    if progress is not None:
        progress(LoadProgress("warm-up", _PROGRESS, "timing a short reply"))
    new = DECODE_STEPS + 1
    try:
        prompt = build_prompt(
            loaded.tokenizer,
            [{"role": "user", "content": PROBE_TEXT}],
            max_new_tokens=new,
            context_max=loaded.state.context_max,
            fallback_template=loaded.state.fallback_template,
        )
        config = generation_config(
            model, loaded.tokenizer, GenerationSettings(temperature=0, max_new_tokens=new), new
        )
        config.min_new_tokens = new  # an end-of-text token must not cut the timing short
        inputs = {
            "input_ids": prompt.input_ids.to(model.device),
            "attention_mask": prompt.attention_mask.to(model.device),
        }
        measured = time_model(model, inputs, config)
    except Exception:  # calibration is informative; the model itself already passed its check
        _log.debug("timing the loaded model failed", exc_info=True)
        return loaded
    speed = compare(
        loaded.state.dtype, measured, loaded.speed_probes, lambda d: d in loaded.safe_dtypes
    )
    if speed.faster_dtype is not None:
        say = first_time(loaded.info.path, loaded.machine, speed.faster_dtype)
        speed = dataclasses.replace(speed, say_faster=say)
    return dataclasses.replace(loaded, state=dataclasses.replace(loaded.state, speed=speed))
