"""Calibrate a freshly loaded or switched model: its measured speed goes on its state."""

from __future__ import annotations

import dataclasses
import logging

from mergechat.core.calibration import compare, first_time, time_model
from mergechat.core.loader import LoadedModel

_log = logging.getLogger(__name__)


def calibrated(loaded: LoadedModel) -> LoadedModel:
    """``loaded`` with `ModelState.speed` measured; a failure only leaves it unmeasured."""
    import torch

    model = loaded.model
    if model is None:
        return loaded
    on_cuda = getattr(model.device, "type", "cpu") == "cuda"

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize()

    try:
        measured = time_model(model, loaded.tokenizer, sync)
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
