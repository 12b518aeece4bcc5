"""Measure each device x dtype on `AUDIT_TEXT`: finite, agreement with float32, float16 headroom.

Torch work on the calling thread (doctor's main thread: it never generates). The model is loaded
once in float32 on the CPU and cast copies are made for the other rows (or each row is loaded on
its own when float32 does not fit), one copy alive at a time.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from mergechat.core.detect.capabilities import DeviceInfo
from mergechat.core.detect.fidelity_cache import FidelityRow, Float16Safety, remember
from mergechat.core.detect.fidelity_verdict import NEAR_LIMIT, float16_verdict
from mergechat.core.dtypes import DTYPES, DType
from mergechat.core.engine.fidelity import AUDIT_TEXT, largest_weight, parameters_abs_max
from mergechat.core.engine.fidelity_activations import ActivationRecorder
from mergechat.core.engine.fidelity_models import fits, load_model, load_tokenizer, prepare_model
from mergechat.core.errors import first_line
from mergechat.core.model.info import ModelInfo

if TYPE_CHECKING:
    import torch

#: The audit text is cut to this many tokens (and to the model's context).
MAX_TOKENS: Final[int] = 512


@dataclass(frozen=True)
class FidelityAudit:
    """Every row of an audit and the float16 verdict drawn from them."""

    rows: tuple[FidelityRow, ...]
    #: None when nothing could be measured (no float32 run and no float16 run).
    safety: Float16Safety | None
    #: Tokens of `AUDIT_TEXT` the model read.
    tokens: int


@dataclass
class _Run:
    logits: torch.Tensor
    finite: bool
    recorder: ActivationRecorder
    seconds: float


def audit_model(
    info: ModelInfo,
    devices: Iterable[DeviceInfo],
    *,
    trust_remote_code: bool = False,
    progress: Callable[[str], None] | None = None,
) -> FidelityAudit:
    """Run the audit on ``devices`` and remember the float16 verdict (see `float16_safety`).

    Never raises for a row: a dtype that fails on a device, or does not fit, is a row with
    ``error``. Loading the tokenizer failing makes every row such a row.
    """
    devices = tuple(devices)
    say = progress or (lambda _text: None)
    try:
        tokenizer = load_tokenizer(info, trust_remote_code)
        input_ids = _encode(tokenizer, info)
    except Exception as exc:
        text = f"could not load the tokenizer: {first_line(exc)}"
        failed = tuple(FidelityRow(d.id, t, error=text) for d in devices for t in DTYPES)
        return FidelityAudit(failed, None, 0)
    tokens = int(input_ids.shape[-1])
    weight: tuple[float, str | None] | None = None
    if info.weights_format == "safetensors":
        say("scanning the weights")
        weight = largest_weight(info.weight_files)
    cpu = next((d for d in devices if d.kind == "cpu"), None)
    master = None
    if cpu is not None and fits(info, cpu, "float32", tokens):
        say("loading the model in float32")
        try:
            master = load_model(info, "float32", "cpu", trust_remote_code)
        except Exception:  # each row then loads on its own and reports its own error
            master = None
    if weight is None and master is not None:
        weight = parameters_abs_max(master)
    references: dict[str, torch.Tensor] = {}
    rows: list[FidelityRow] = []
    reference_run: _Run | None = None
    for device in devices:
        for dtype in DTYPES:
            say(f"running {device.id} {dtype}")
            row, run = _audit_row(info, device, dtype, master, input_ids, trust_remote_code)
            if run is not None and dtype == "float32" and run.finite:
                references.setdefault(device.id, run.logits)
                reference_run = reference_run or run
            if run is not None:
                row = _compare(row, run, references, device.id, dtype, weight)
            rows.append(row)
    del master
    _free()
    safety = float16_verdict(
        rows, weight, reference_run.recorder.maxima if reference_run else None, info
    )
    if safety is not None:
        remember(info, safety, tuple(rows))
    return FidelityAudit(tuple(rows), safety, tokens)


def _audit_row(
    info: ModelInfo,
    device: DeviceInfo,
    dtype: DType,
    master: Any,
    input_ids: torch.Tensor,
    trust_remote_code: bool,
) -> tuple[FidelityRow, _Run | None]:
    reuse = master is not None and (device.kind, dtype) == ("cpu", "float32")
    if not reuse and not fits(info, device, dtype, int(input_ids.shape[-1])):
        return FidelityRow(device.id, dtype, error="not measured: does not fit in memory"), None
    model = None
    try:
        model = prepare_model(info, master, device.id, dtype, trust_remote_code)
        return FidelityRow(device.id, dtype), _measure(model, input_ids)
    except Exception as exc:
        return FidelityRow(device.id, dtype, error=first_line(exc)), None
    finally:
        if model is not master:
            del model
            _free()


def _measure(model: Any, input_ids: torch.Tensor) -> _Run:
    import torch

    device = next(model.parameters()).device
    recorder = ActivationRecorder(model)
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            out = model(input_ids=input_ids.to(device), output_hidden_states=True)
    finally:
        recorder.detach()
    seconds = time.perf_counter() - start
    logits = out.logits[0].to(device="cpu", dtype=torch.float32)
    hidden = out.hidden_states or ()
    finite = bool(torch.isfinite(logits).all()) and all(
        bool(torch.isfinite(h).all()) for h in hidden
    )
    return _Run(logits, finite and recorder.first_nonfinite is None, recorder, seconds)


def _compare(
    row: FidelityRow,
    run: _Run,
    references: dict[str, torch.Tensor],
    device: str,
    dtype: DType,
    weight: tuple[float, str | None] | None,
) -> FidelityRow:
    import torch

    if dtype == "float32" and device != "cpu" and "cpu" in references:
        ref_device = "cpu"
    else:
        ref_device = device if device in references else "cpu"
    reference = references.get(ref_device)
    agreement = diff = None
    if reference is not None:
        ok = torch.isfinite(run.logits).all(dim=-1)
        agree = (reference.argmax(dim=-1) == run.logits.argmax(dim=-1)) & ok
        agreement = float(agree.float().mean())
        delta = (reference - run.logits).abs()
        diff = float(delta.max()) if bool(torch.isfinite(delta).all()) else math.inf
    act_value, act_name = run.recorder.largest()
    weight_value, weight_name = weight if weight is not None else (None, None)
    near = max(act_value, weight_value or 0.0) > NEAR_LIMIT or not run.finite
    return replace(
        row,
        finite=run.finite,
        top1_agreement=agreement,
        max_logit_diff=diff,
        near_float16_limit=near,
        largest_weight=weight_value,
        largest_weight_name=weight_name,
        largest_activation=act_value,
        largest_activation_layer=act_name,
        first_nonfinite_layer=run.recorder.first_nonfinite,
        reference=f"{ref_device} float32" if reference is not None else None,
        seconds=run.seconds,
    )


def _encode(tokenizer: Any, info: ModelInfo) -> torch.Tensor:
    limit = min(MAX_TOKENS, info.context_length or MAX_TOKENS)
    ids: torch.Tensor = tokenizer(AUDIT_TEXT, return_tensors="pt")["input_ids"]
    return ids[:, :limit]


def _free() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - cleanup only
        pass
