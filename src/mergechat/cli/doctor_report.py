"""`mergechat doctor`'s findings as data: what was asked, what was measured, and the JSON form."""

from __future__ import annotations

import dataclasses
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from mergechat import __version__
from mergechat.cli import doctor_config
from mergechat.core.detect.capabilities import Assessment, Capabilities
from mergechat.core.detect.fidelity_cache import FidelityRow, Float16Safety
from mergechat.core.dtypes import DType
from mergechat.core.model.info import ModelInfo
from mergechat.core.settings import locations


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
