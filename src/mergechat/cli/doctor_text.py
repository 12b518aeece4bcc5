"""`mergechat doctor`'s text report: aligned label/value rows, long values wrapped."""

from __future__ import annotations

import textwrap

from mergechat.cli import doctor_config
from mergechat.cli.doctor_probes import cut, probe_lines
from mergechat.cli.doctor_report import DoctorReport
from mergechat.core.detect.capabilities import Assessment, Capabilities, ChoiceVerdict, DeviceInfo
from mergechat.core.model.info import ModelInfo
from mergechat.core.settings import model_defaults
from mergechat.core.text import format_bytes

_LABEL = 19  # width of the label column in the text report
_WIDTH = 100  # lines are wrapped to this width


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
