"""`mergechat doctor`: what this machine runs and how fast, and for a model, what fits and why.

Doctor runs the probes on the main thread: it never generates, so there is no engine thread
whose speed it could spoil.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TextIO

from mergechat import __version__
from mergechat.cli import doctor_config
from mergechat.cli.doctor_probes import cut, probe_lines
from mergechat.core.detect.capabilities import Assessment, Capabilities, ChoiceVerdict, DeviceInfo
from mergechat.core.detect.fidelity_cache import FidelityRow, Float16Safety
from mergechat.core.dtypes import DType
from mergechat.core.model.info import ModelInfo
from mergechat.core.settings import locations, model_defaults
from mergechat.core.text import format_bytes

_LABEL = 19  # width of the label column in the text report
_WIDTH = 100  # lines are wrapped to this width


@dataclass(frozen=True)
class DoctorRequest:
    """What ``mergechat doctor`` was asked."""

    path: Path | None = None
    #: ``auto`` or a device the assessment should use.
    device: str = "auto"
    dtype: DType | Literal["auto"] = "auto"
    #: Measure again instead of reading the probe cache.
    refresh: bool = False
    json_output: bool = False
    #: Run the model in each device x dtype and measure fidelity (``--fidelity``).
    fidelity: bool = False


@dataclass(frozen=True)
class DoctorReport:
    """Everything doctor found: the machine's capabilities and, for a PATH, the model's view."""

    mergechat_version: str
    python_version: str
    platform: str
    transformers_version: str | None
    capabilities: Capabilities
    model: ModelInfo | None = None
    assessment: Assessment | None = None
    #: mergechat's config/history files and folders that other users can read.
    exposed: tuple[str, ...] = ()
    #: ``--fidelity`` rows (one per device x dtype); None when not asked.
    fidelity: tuple[FidelityRow, ...] | None = None
    #: ``--fidelity``'s float16 verdict; None when not asked or nothing could be measured.
    fidelity_verdict: Float16Safety | None = None
    #: Every problem in config.toml (keymap clashes included), each one line.
    config_problems: tuple[str, ...] = ()


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _progress_line() -> Callable[[float, str], None]:
    """Progress on one rewritten stderr line when stderr is a terminal; else silence."""
    if not sys.stderr.isatty():
        return lambda _fraction, _text: None

    def show(fraction: float, text: str) -> None:
        line = f"{fraction * 100:3.0f}% {text}"[:79] if fraction < 1.0 else ""
        sys.stderr.write(f"\r\x1b[2K{line}")
        sys.stderr.flush()

    return show


def gather(request: DoctorRequest) -> DoctorReport:
    """Inspect the model (if any), run or read the probes, and assess the model on this machine."""
    from mergechat.core.detect.devices import parse_device
    from mergechat.core.detect.probe import detect
    from mergechat.core.detect.probe_shape import shape_for

    info = None
    if request.path is not None:
        from mergechat.core.detect.model_support import inspect_model

        # Before probing: a path that is not a model fails fast. Problems that stop a model from
        # chatting are reported with the rest (run_doctor then exits 2).
        info = inspect_model(request.path, strict=False)
    progress = _progress_line()
    caps = detect(
        shape=shape_for(info),
        refresh=request.refresh,
        progress=lambda fraction, text: progress(fraction, f"probing {text}"),
    )
    progress(1.0, "")  # clears the progress line
    device = parse_device(request.device, caps.devices)  # exit 2 for a device not here
    rows, verdict = None, None
    if request.fidelity and info is not None:
        from mergechat.cli import doctor_fidelity

        # Before the assessment, so float16's measured safety already counts in it.
        step = _progress_line()
        rows, verdict = doctor_fidelity.measure(
            info, caps.devices, device, progress=lambda text: step(0.5, f"fidelity: {text}")
        )
        step(1.0, "")
    assessment = None
    if info is not None:
        from mergechat.core.detect.policy import assess

        assessment = assess(info, caps, device=device, dtype=request.dtype)
    return DoctorReport(
        mergechat_version=__version__,
        python_version=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
        transformers_version=_package_version("transformers"),
        capabilities=caps,
        model=info,
        assessment=assessment,
        exposed=tuple(locations.exposed_files()),
        fidelity=rows,
        fidelity_verdict=verdict,
        config_problems=tuple(doctor_config.config_problems()),
    )


# -- JSON -----------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """Paths to strings, tuples to lists, recursively (what `json.dumps` can write)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def report_to_json(report: DoctorReport) -> dict[str, Any]:
    """The report as plain JSON data (``dataclasses.asdict`` plus the model's derived dtypes)."""
    data: dict[str, Any] = _plain(dataclasses.asdict(report))
    if report.model is not None:
        data["model"]["native_dtype"] = report.model.native_dtype
        data["model"]["disk_dtype"] = report.model.disk_dtype
    if report.fidelity is not None:
        from mergechat.cli import doctor_fidelity

        data.update(doctor_fidelity.to_json(report.fidelity_verdict, report.fidelity))
    return data


# -- text -----------------------------------------------------------------------------------------
def human_bytes(count: int | None) -> str:
    """``1.2 GiB``, ``340.0 MiB``, ``12.0 KiB`` or ``unknown``."""
    return "unknown" if count is None else format_bytes(count)


def human_count(count: int | None) -> str:
    """``1.24 B (1,235,814,400)``, ``612.4 K (612,352)`` or ``unknown``."""
    if count is None:
        return "unknown"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.3g} {suffix} ({count:,})"
    return f"{count:,}"


def _row(label: str, value: object) -> str:
    """``  label            value``, long values wrapped under the value column."""
    lead = f"  {label:<{_LABEL}}"
    return textwrap.fill(str(value), _WIDTH, initial_indent=lead, subsequent_indent=" " * len(lead))


def _device_line(device: DeviceInfo) -> str:
    parts = [device.name]
    if device.cores:
        parts.append(f"{device.cores} cores")
    if device.compute_capability:
        parts.append("compute capability {}.{}".format(*device.compute_capability))
    if device.bf16_native is not None:
        parts.append("native bfloat16" if device.bf16_native else "no native bfloat16")
    if device.total_bytes is not None:
        parts.append(f"{human_bytes(device.free_bytes)} free of {human_bytes(device.total_bytes)}")
    return f"  {device.id}: " + " · ".join(parts)


def _machine(report: DoctorReport) -> list[str]:
    caps = report.capabilities
    cpu = next((d for d in caps.devices if d.kind == "cpu"), None)
    lines = ["Machine"]
    if cpu is not None:
        lines.append(_row("CPU", f"{cpu.name} ({cpu.cores or '?'} cores)"))
        lines.append(_row("CPU features", " ".join(cpu.features) or "none that matter"))
        lines.append(
            _row("RAM", f"{human_bytes(cpu.free_bytes)} free of {human_bytes(cpu.total_bytes)}")
        )
    lines.append(_row("torch", caps.torch_version))
    lines.append(_row("transformers", report.transformers_version or "not installed"))
    lines.append(_row("Python", f"{report.python_version} on {report.platform}"))
    cached = " (cached)" if caps.from_cache else ""
    lines.append(_row("Probe time", f"{caps.probe_seconds:.2f} s{cached}"))
    lines += [_row("Warning", line) for line in report.exposed]
    return lines


def _probes(caps: Capabilities) -> list[str]:
    return probe_lines(caps, {d.id: _device_line(d) for d in caps.devices})


def _model(info: ModelInfo) -> list[str]:
    lines = [f"Model {info.path}", _row("Name", info.name)]
    arch = ", ".join(info.architectures) or "unknown"
    lines.append(_row("Architecture", f"{arch} ({info.model_type or 'unknown type'})"))
    files = len(info.weight_files)
    fmt = str(info.weights_format)
    if info.gguf_quantization:
        fmt += f" {info.gguf_quantization}"
    on_disk = human_bytes(info.weights_bytes_on_disk)
    lines.append(_row("Format", f"{fmt}, {files} file{'s' if files != 1 else ''}, {on_disk}"))
    lines.append(_row("Parameters", human_count(info.parameter_count)))
    lines.append(_row("Declared dtype", info.declared_dtype or "not declared"))
    lines.append(_row("Stored dtypes", ", ".join(info.stored_dtypes) or "unknown"))
    merge = info.merge
    if merge is not None:
        detail = f"dtype {merge.dtype or '-'}, out_dtype {merge.out_dtype or '-'}"
        lines.append(_row("Merge", f"{merge.merge_method or 'unknown method'} ({detail})"))
        lines.append(_row("Base model", merge.base_model or "-"))
        for i, source in enumerate(merge.models or ("-",)):
            lines.append(_row("Sources" if i == 0 else "", source))
    template = "yes" if info.has_chat_template else "none: a ChatML fallback will be used"
    lines.append(_row("Chat template", template))
    tokenizer = "yes" if info.has_tokenizer else "missing"
    if merge is not None and merge.tokenizer_source:
        tokenizer += f" (merge tokenizer_source: {merge.tokenizer_source})"
    lines.append(_row("Tokenizer", tokenizer))
    folder = info.path if info.path.is_dir() else info.path.parent
    lines.append(_row("Generation config", model_defaults.describe(folder)))
    context = f"{info.context_length:,} tokens" if info.context_length else "unknown"
    lines.append(_row("Context length", context))
    problems = [p.message for p in info.problems]
    warnings = list(dict.fromkeys((*info.warnings, *(merge.warnings if merge else ()))))
    for i, warning in enumerate(w for w in warnings if w not in problems):
        lines.append(_row("Warnings" if i == 0 else "", warning))
    for i, problem in enumerate(problems):
        lines.append(_row("Problems" if i == 0 else "", problem))
    return lines


def _memory(verdict: ChoiceVerdict) -> str:
    fit = verdict.fit
    if fit is None or fit.needed_bytes is None:
        return ""
    return f"{human_bytes(fit.needed_bytes)} needed, {human_bytes(fit.free_bytes)} free"


def _assessment(assessment: Assessment) -> list[str]:
    rec = assessment.recommendation
    texts = [cut(v.text, 40) for v in assessment.verdicts]
    width = max((len(t) for t in texts), default=0) + 2
    lines = ["Choices for this model (* = recommended; memory = weights + KV cache + overhead)"]
    for v, text in zip(assessment.verdicts, texts, strict=True):
        mark = "*" if (v.device, v.dtype) == (rec.device, rec.dtype) else " "
        lines.append(f"  {mark} {v.device:<8}{v.dtype:<10}{text:<{width}}{_memory(v)}".rstrip())
        if v.speed:
            lines.append(f"{'':<22}{v.speed}")
    lines += ["", "Recommendation"]
    lines.append(
        _row("Device", rec.device + (f" (device_map={rec.device_map})" if rec.device_map else ""))
    )
    lines.append(_row("Precision", rec.dtype))
    lines.append(_row("Reason", rec.reason))
    warnings = dict.fromkeys((*assessment.warnings, *rec.warnings))
    lines += [_row("Warning", w) for w in warnings]
    return lines


def format_text(report: DoctorReport) -> str:
    """The tidy, aligned text report."""
    head = f"mergechat {report.mergechat_version} doctor"
    sections = [[head], _machine(report), _probes(report.capabilities)]
    sections.append(doctor_config.lines(report.config_problems, _row))
    if report.model is not None:
        sections.append(_model(report.model))
    if report.assessment is not None:
        sections.append(_assessment(report.assessment))
    if report.fidelity is not None:
        from mergechat.cli import doctor_fidelity

        sections.append(doctor_fidelity.lines(report.fidelity, report.fidelity_verdict))
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def run_doctor(request: DoctorRequest, *, out: TextIO | None = None) -> int:
    """Print the report (text or one JSON object); return the exit code.

    When the model has a problem that stops it from chatting, the report is printed first and
    then `ModelFolderError` is raised (one error line, exit code 2).
    """
    from mergechat.core.model.inspection import require_usable

    stream = out or sys.stdout
    report = gather(request)
    if request.json_output:
        stream.write(json.dumps(report_to_json(report), indent=2, ensure_ascii=False) + "\n")
    else:
        stream.write(format_text(report))
    stream.flush()
    if report.model is not None:
        require_usable(report.model)
    return 0
