"""Load a model and its tokenizer on the engine thread, with real progress and a NaN/inf guard."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mergechat.core.api import LoadProgress, LoadRequest, LoadStage, ModelState
from mergechat.core.detect.capabilities import ProbeResult, Recommendation
from mergechat.core.detect.probe_cache import machine_fingerprint
from mergechat.core.detect.probe_shape import shape_for
from mergechat.core.dtypes import DType, torch_dtype
from mergechat.core.engine.error_translation import is_out_of_memory, out_of_memory_error
from mergechat.core.engine.fidelity import PROBE_TEXT
from mergechat.core.engine.finite_check import check_finite
from mergechat.core.engine.model_facts import (
    context_max,
    device_label,
    holds_disk_values,
    read_dtype,
)
from mergechat.core.engine.model_generation_config import generation_config_kwargs
from mergechat.core.model.info import ModelInfo
from mergechat.core.text import byte_unit

Progress = Callable[[LoadProgress], None]

_CHUNK = 16 * 1024 * 1024
#: Start of each stage on the 0..1 progress scale; reading weights spans 0.10..0.60.
_STAGE_START: dict[LoadStage, float] = {
    "inspecting": 0.0,
    "probing": 0.04,
    "reading": 0.10,
    "loading": 0.60,
    "casting": 0.85,
    "warm-up": 0.92,
}


@dataclass
class LoadedModel:
    """What the engine holds for the loaded model (engine thread only; mutable on purpose)."""

    model: Any
    tokenizer: Any
    info: ModelInfo
    state: ModelState
    #: Where and how it was placed; a reload for a precision switch reuses it.
    recommendation: Recommendation
    trust_remote_code: bool
    #: True while the weights hold exactly the values stored on disk (no lossy cast happened).
    exact: bool
    warnings: tuple[str, ...] = field(default_factory=tuple)
    #: The float32 CPU logits of the fidelity probe text in the current dtype (from the last
    #: NaN/inf check): the next precision switch compares against them without another pass.
    reference_logits: Any = None
    #: The detector's predictions on the model's device, the dtypes safe for it, and the
    #: machine's key: what calibration compares the measured speed with.
    speed_probes: tuple[ProbeResult, ...] = ()
    safe_dtypes: tuple[DType, ...] = ()
    machine: str = ""


def load(
    request: LoadRequest,
    *,
    probe_cache: Path | None,
    progress: Progress,
    release_previous: Callable[[], None],
) -> LoadedModel:
    """Inspect, assess, pre-read and load ``request``; raise on any failure.

    ``release_previous`` is called once the request has passed every check that needs no
    weights, so a bad path or device keeps the previous model while a real load frees its memory.
    """
    from mergechat.core.detect import model_support as inspect
    from mergechat.core.detect import policy, probe
    from mergechat.core.engine.pickle_check import torch_unsafe_globals

    progress(LoadProgress("inspecting", _STAGE_START["inspecting"], str(request.path)))
    # Strict: an unknown architecture, a missing tokenizer, a tokenizer past the embedding
    # matrix or an unsafe pickle (by torch's own allow-list) stop here, before any weight is read.
    info = inspect.inspect_model(request.path, strict=True, pickle_check=torch_unsafe_globals)
    caps = probe.detect(
        shape=shape_for(info), cache_file=probe_cache, progress=_probe_progress(progress)
    )
    assessment = policy.assess(
        info,
        caps,
        device=request.device,
        dtype=request.dtype,
        context_tokens=request.context_tokens,
    )
    rec = assessment.recommendation
    release_previous()
    warnings = _unique((*info.warnings, *assessment.warnings, *rec.warnings))
    try:
        loaded = load_weights(
            info,
            rec,
            trust_remote_code=request.trust_remote_code,
            progress=progress,
            warnings=warnings,
        )
        return replace(
            loaded,
            speed_probes=tuple(p for p in caps.probes if p.device == rec.device),
            safe_dtypes=assessment.safe_dtypes,
            machine=machine_fingerprint(caps.devices, caps.torch_version),
        )
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        # The fit the policy computed says what the whole model needs, not one allocation.
        verdict = assessment.verdict(rec.device, rec.dtype)
        fit = verdict.fit if verdict is not None else None
        raise out_of_memory_error(
            exc,
            dtype=rec.dtype,
            device=rec.device,
            needed_bytes=fit.needed_bytes if fit is not None else None,
            free_bytes=fit.free_bytes if fit is not None else None,
            what="loading the model",
        ) from exc


def _probe_progress(progress: Progress) -> Callable[[float, str], None]:
    """Map the detector's 0..1 progress onto the load's probing stage."""
    start, end = _STAGE_START["probing"], _STAGE_START["reading"]

    def report(fraction: float, text: str) -> None:
        progress(LoadProgress("probing", start + (end - start) * fraction, text))

    report(0.0, "measuring devices and dtypes with this model's shapes")
    return report


def load_weights(
    info: ModelInfo,
    rec: Recommendation,
    *,
    trust_remote_code: bool,
    progress: Progress | None = None,
    warnings: tuple[str, ...] = (),
) -> LoadedModel:
    """Read, load, place and check the weights of ``info`` as ``rec`` says."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    report: Progress = progress or (lambda _event: None)
    prewarm_files(info.weight_files, report)
    folder, extra = _source(info)
    report(LoadProgress("loading", _STAGE_START["loading"], f"from_pretrained in {rec.dtype}"))
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code, **extra)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(rec.dtype), **extra}
    if "gguf_file" in extra:
        from mergechat.core.engine.gguf_convert import dequantize_kwargs

        # Dense weights: the memory fit, dtype switches and NaN check all assume them.
        kwargs.update(dequantize_kwargs())
    if rec.device_map is not None:
        kwargs["device_map"] = rec.device_map
    if info.weights_format == "pytorch-bin":
        # Never full unpickling (it can run code); inspection already refused unsafe pickles.
        kwargs["weights_only"] = True
    defaults, defaults_warning = generation_config_kwargs(folder)
    kwargs.update(defaults)  # invalid generation_config.json keys left out, with a warning
    warnings = (*warnings, defaults_warning) if defaults_warning else warnings
    model: Any = AutoModelForCausalLM.from_pretrained(
        folder, trust_remote_code=trust_remote_code, **kwargs
    )
    model.eval()
    report(LoadProgress("casting", _STAGE_START["casting"], f"placing on {rec.device}"))
    if rec.device_map is None and rec.device != "cpu":
        model.to(rec.device)
    dtype = read_dtype(model)
    device, device_id, offloaded = device_label(model)
    report(LoadProgress("warm-up", _STAGE_START["warm-up"], "first forward pass"))
    exact = holds_disk_values(info, dtype)
    # The warm-up pass reads the fidelity probe text, so a later switch reuses its logits.
    logits = check_finite(model, tokenizer, dtype, text=PROBE_TEXT, exact=exact)
    fallback = getattr(tokenizer, "chat_template", None) is None
    if fallback:
        warnings = (
            *warnings,
            "the model has no chat template; using a ChatML fallback template (replies may "
            "be poor: it may be a base model, not a chat model)",
        )
    state = ModelState(
        path=info.path,
        name=info.name,
        device=device,
        dtype=dtype,
        disk_dtype=info.disk_dtype,
        context_max=context_max(info, model, tokenizer),
        offloaded=offloaded,
        merge_method=info.merge.merge_method if info.merge else None,
        fallback_template=fallback,
        reason=rec.reason,
        device_id=device_id,
    )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        info=info,
        state=state,
        recommendation=rec,
        trust_remote_code=trust_remote_code,
        exact=exact,
        warnings=_unique(warnings),
        reference_logits=logits,
    )


def prewarm_files(files: tuple[Path, ...], progress: Progress) -> None:
    """Read the weight files once in chunks so the page cache is warm and progress is real bytes."""
    sizes = [f.stat().st_size for f in files]
    total = sum(sizes) or 1
    done = 0
    last_report = 0.0
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    span = _STAGE_START["loading"] - _STAGE_START["reading"]
    for index, (path, size) in enumerate(zip(files, sizes, strict=True), start=1):
        with path.open("rb", buffering=0) as handle:
            while (count := handle.readinto(view)) > 0:
                done += count
                now = time.monotonic()
                # At most ~10 events a second, but always one at the end of each shard.
                if now - last_report >= 0.1 or handle.tell() >= size:
                    last_report = now
                    detail = f"shard {index}/{len(files)}, {_sizes(done, total)}"
                    fraction = _STAGE_START["reading"] + span * done / total
                    progress(LoadProgress("reading", fraction, detail))


def release(loaded: LoadedModel | None) -> None:
    """Drop the model's memory now (CPU RAM and the CUDA cache)."""
    if loaded is not None:
        loaded.model = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _source(info: ModelInfo) -> tuple[Path, dict[str, Any]]:
    """The folder to load from, plus ``gguf_file=`` for a GGUF model."""
    if info.weights_format == "gguf" and info.gguf_file is not None:
        return info.gguf_file.parent, {"gguf_file": info.gguf_file.name}
    return info.path, {}


def _quiet_transformers() -> None:
    # Progress bars and info logs on stderr would tear through the TUI; events report progress.
    from transformers.utils import logging as hf_logging

    hf: Any = hf_logging
    hf.disable_progress_bar()
    hf.set_verbosity_error()


def _sizes(done: int, total: int) -> str:
    """``1.2/2.4 GiB``: both in the unit of the total, so small models do not read ``0.0/0.0``."""
    unit, scale = byte_unit(total)
    return f"{done / scale:.1f}/{total / scale:.1f} {unit}"


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
