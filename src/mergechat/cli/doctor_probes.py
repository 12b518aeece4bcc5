"""Doctor's probe table: each device x dtype's predicted decode, prompt and turn speed."""

from __future__ import annotations

import textwrap

from mergechat.core.detect.capabilities import Capabilities, ProbeResult
from mergechat.core.detect.probe_shape import TURN_NEW_TOKENS, TURN_PROMPT_TOKENS
from mergechat.core.detect.verdicts import BUSY_TEXT, probe_verdict_text

_ERROR_WIDTH = 64  # long backend errors are cut in the text report (JSON keeps them whole)


def cut(text: str, width: int = _ERROR_WIDTH) -> str:
    """``text`` on one line, cut to ``width`` with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _wrap(text: str) -> str:
    return textwrap.fill(text, 98, initial_indent="  ", subsequent_indent="  ")


def _rate(seconds_per_token: float | None) -> str:
    return f"{1 / seconds_per_token:,.1f}" if seconds_per_token else ""


def _row(probe: ProbeResult) -> str:
    if probe.verdict == "unsupported":
        return f"    {probe.dtype:<10}{cut(probe_verdict_text(probe))}"
    verdict = "ok" if not probe.reliable else probe_verdict_text(probe)
    turn = ""
    if probe.seconds is not None:
        turn = f"{probe.seconds:.1f} s" if probe.seconds >= 0.1 else f"{probe.seconds * 1e3:.1f} ms"
    factor = f"{probe.factor:.2f}x" if probe.factor is not None else ""
    return (
        f"    {probe.dtype:<10}{verdict:<20}{_rate(probe.decode_s):>10}"
        f"{_rate(probe.prefill_s):>12}{turn:>10}{factor:>8}"
    )


def probe_lines(caps: Capabilities, device_line: dict[str, str]) -> list[str]:
    """The section: a heading saying what was probed, then one table per device."""
    shape = caps.shape
    if shape is not None and shape.from_model:
        what = f"this model's shapes: {shape.describe()}"
    else:
        what = "a generic 1024-wide layer (give a model path to probe its own shapes)"
    lines = [
        "Devices and precisions (predicted per chat turn)",
        _wrap(f"Probed with {what}."),
        _wrap(
            f"A turn is a {TURN_PROMPT_TOKENS}-token prompt plus a {TURN_NEW_TOKENS}-token "
            "reply; decode/s and prompt/s are tokens per second."
        ),
    ]
    if not caps.reliable:
        busy = f"{caps.busy_cores:.1f} cores" if caps.busy_cores is not None else "the CPU"
        lines.append(
            _wrap(
                f"Speeds were {BUSY_TEXT.replace(': ', ' (')}): other programs used {busy} "
                "during the probe. Models keep their own precision; run doctor again on a quiet "
                "machine."
            )
        )
    for device in caps.devices:
        lines.append(device_line[device.id])
        lines.append(
            f"    {'dtype':<10}{'verdict':<20}{'decode/s':>10}{'prompt/s':>12}"
            f"{'turn':>10}{'vs best':>8}"
        )
        lines += [_row(p) for p in caps.probes if p.device == device.id]
    return lines
