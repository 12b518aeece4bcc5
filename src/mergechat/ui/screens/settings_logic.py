"""What the settings screen decides, free of widgets: verdicts, blocks, confirmations, reloads."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mergechat.core.api import CapabilitiesReady, ModelState
from mergechat.core.detect.capabilities import BLOCKING_VERDICTS, Recommendation
from mergechat.core.detect.verdicts import probe_verdict_text
from mergechat.core.dtypes import DType, has_range_of, normalize_dtype
from mergechat.core.model.info import ModelInfo
from mergechat.core.model.target import looks_remote, model_key, url_text
from mergechat.core.settings.config import Config
from mergechat.core.settings.device_choice import DeviceChoice
from mergechat.core.visible import escape_control
from mergechat.ui.verdicts import verdict_line

#: Verdicts that make a choice impossible to apply.
BLOCKING = BLOCKING_VERDICTS


@dataclass(frozen=True)
class VerdictRow:
    """The detector's verdict for one device x dtype, as shown on a line of the screen."""

    device: str
    dtype: DType
    #: ``ok``, ``slow``, ``unsupported`` or ``does not fit``.
    verdict: str
    #: `ChoiceVerdict.text` (or the same made from a bare probe when no model was assessed).
    text: str


def verdict_rows(event: CapabilitiesReady | None) -> list[VerdictRow]:
    """Every device x dtype verdict in ``event``: the model's assessment, else the bare probes."""
    if event is None:
        return []
    if event.assessment is not None:
        return [
            VerdictRow(v.device, v.dtype, v.verdict, verdict_line(v))
            for v in event.assessment.verdicts
        ]
    return [
        VerdictRow(p.device, p.dtype, p.verdict, probe_verdict_text(p))
        for p in event.capabilities.probes
    ]


def model_path_problem(text: str) -> str | None:
    """Why the model path typed in ``text`` cannot be used, or None when it can (or is empty).

    The text is data: ``~`` is expanded, nothing else is interpreted. Never raises, whatever
    the text (a NUL, ``~unknown-user``, a name too long for the file system).
    """
    if not text.strip() or looks_remote(text.strip()):
        return None  # a server's URL is checked on Apply, against the server
    shown = escape_control(text)  # one line, and no escape sequence reaches the screen
    if "\x00" in text:
        return f"a path cannot contain a NUL character: {shown}"
    try:
        exists = Path(os.path.expanduser(text)).exists()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"cannot use this path ({reason}): {shown}"
    return None if exists else f"no such file or folder: {shown}"


def device_id_for(wanted: str, device_ids: Sequence[str]) -> str | None:
    """The existing device a config value names (``cuda``: the first CUDA one); None if absent."""
    try:
        choice = DeviceChoice.parse(wanted)
    except ValueError:
        return None
    if choice.device_id in device_ids:
        return choice.device_id
    if choice.index is None:
        return next((d for d in device_ids if d.startswith(f"{choice.kind}:")), None)
    return None


def resolve_choice(
    device: str, dtype: str, event: CapabilitiesReady | None
) -> tuple[str | None, DType | None]:
    """The concrete device and dtype a (possibly ``auto``) choice means; None where unknown."""
    rec = event.assessment.recommendation if event and event.assessment else None
    ids = [d.id for d in event.capabilities.devices] if event else []
    if device == "auto":
        resolved_device = rec.device if rec else None
    else:
        resolved_device = device_id_for(device, ids) if ids else device
    if dtype != "auto":
        return resolved_device, normalize_dtype(dtype)
    if rec is not None and resolved_device == rec.device:
        return resolved_device, rec.dtype
    return resolved_device, None


def find_verdict(
    rows: Sequence[VerdictRow], device: str | None, dtype: DType | None
) -> VerdictRow | None:
    """The row for one choice, if the detector judged it."""
    return next((r for r in rows if r.device == device and r.dtype == dtype), None)


def range_risk(dtype: DType, native: DType | None) -> str | None:
    """Why ``dtype`` is risky for a model made in ``native`` (float16 for a bf16/fp32 model)."""
    if native is None or has_range_of(dtype, native):
        return None
    return (
        f"the model is {native}; {dtype} cannot hold values above 65504, so large weights or "
        "activations (common in merges) can overflow to inf"
    )


def confirmation_reasons(
    row: VerdictRow | None, dtype_choice: str, native: DType | None
) -> list[str]:
    """Reasons to ask before applying a choice: it is slow here, or it may overflow."""
    reasons = []
    if row is not None and row.verdict == "slow":
        reasons.append(f"{row.dtype} on {row.device} is {row.text} against the fastest precision")
    chosen = normalize_dtype(dtype_choice)
    risk = range_risk(chosen, native) if chosen else None
    if risk:
        reasons.append(risk)
    return reasons


def config_path(text: str) -> str:
    """What a typed model path is saved as: a server's URL as written, a path made absolute."""
    if not text:
        return ""
    if looks_remote(text):
        return url_text(text)
    return os.path.abspath(os.path.expanduser(text))


def _same_device(wanted: str, state: ModelState, rec: Recommendation | None) -> bool:
    if wanted == "auto":
        if rec is None:
            return False
        wanted = rec.device
    try:
        return DeviceChoice.parse(wanted).device_id == state.device_id
    except ValueError:
        return False


def decide_reload(
    old: Config, new: Config, state: ModelState | None, rec: Recommendation | None
) -> tuple[bool, DType | None]:
    """(reload, switch_dtype) for applying ``new`` over ``old`` while ``state`` is loaded.

    A new path, device or trust setting reloads; a changed dtype on the same loaded model
    becomes a runtime switch (the engine casts or reloads by its own rules). ``auto`` resolves
    to the recommendation, and reloads when there is none.
    """
    if not new.model.path:
        return False, None
    if state is None:
        return True, None
    if model_key(new.model.path) != model_key(state.path):
        return True, None
    if new.model.trust_remote_code != old.model.trust_remote_code:
        return True, None
    if new.model.device != old.model.device and not _same_device(new.model.device, state, rec):
        return True, None
    if new.model.dtype == old.model.dtype:
        return False, None
    target = normalize_dtype(new.model.dtype)
    if target is None:  # "auto"
        if rec is None:
            return True, None
        target = rec.dtype
    return False, (target if target != state.dtype else None)


def _count(n: int) -> str:
    for size, unit in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def model_facts(info: ModelInfo) -> str:
    """One line: name, type, size, declared and stored dtypes."""
    parts = [info.name]
    if info.model_type:
        parts.append(info.model_type)
    if info.parameter_count:
        parts.append(f"{_count(info.parameter_count)} parameters")
    if info.gguf_quantization:
        parts.append(f"GGUF {info.gguf_quantization}")
    parts.append(f"declared {info.declared_dtype or 'not set'}")
    if info.stored_dtypes:
        parts.append(f"stored {'/'.join(info.stored_dtypes)}")
    return " · ".join(parts)


def merge_facts(info: ModelInfo) -> str | None:
    """One line about the merge (method and dtypes), or None for a model that is not a merge."""
    merge = info.merge
    if merge is None:
        return None
    parts = [f"merge {merge.merge_method or 'unknown method'}"]
    parts.append(f"merge dtype {merge.dtype or 'not set'}")
    if merge.out_dtype:
        parts.append(f"out_dtype {merge.out_dtype}")
    if merge.base_model:
        parts.append(f"base {merge.base_model}")
    return " · ".join(parts)
