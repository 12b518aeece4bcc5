"""Host app, detector fake and hand-built detector results for the settings/precision/help tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult
from textual.screen import Screen
from textual.widgets import Static

from fixtures.fake_engine import DetectAnswer, FakeEngine, Script
from mergechat.core.api import CapabilitiesReady, EngineEvent
from mergechat.core.detect.capabilities import (
    Assessment,
    Capabilities,
    ChoiceVerdict,
    DeviceInfo,
    ProbeResult,
    Recommendation,
)
from mergechat.core.dtypes import DType
from mergechat.core.model.info import ModelInfo
from mergechat.core.model.recipe import MergeInfo
from mergechat.ui.themes import register_themes

UNSUPPORTED_HALF = "unsupported: \"addmm_impl_cpu_\" not implemented for 'Half'"
CUDA_NO_FIT = "does not fit: 9.1 GiB needed, 3.2 GiB free"

#: (device, dtype) -> ChoiceVerdict.text used by `make_event` unless told otherwise.
DEFAULT_TEXTS: dict[tuple[str, DType], str] = {
    ("cpu", "float32"): "ok",
    ("cpu", "bfloat16"): "ok",
    ("cpu", "float16"): UNSUPPORTED_HALF,
    ("cuda:0", "float32"): CUDA_NO_FIT,
    ("cuda:0", "bfloat16"): "ok",
    ("cuda:0", "float16"): "slow 4.2x",
}
REASON = "bfloat16 is the fastest measured precision on cpu and keeps the merge's range"


def _verdict(text: str) -> str:
    for word in ("unsupported", "does not fit", "slow"):
        if text.startswith(word):
            return word
    return "ok"


def make_event(
    texts: dict[tuple[str, DType], str] | None = None,
    *,
    recommendation: tuple[str, DType] | None = ("cpu", "bfloat16"),
    with_assessment: bool = True,
) -> CapabilitiesReady:
    """A `CapabilitiesReady` built by hand: devices from ``texts``, probes and an assessment."""
    texts = DEFAULT_TEXTS if texts is None else texts
    device_ids = list(dict.fromkeys(device for device, _ in texts))
    devices = tuple(
        DeviceInfo("cpu", "cpu", "Test CPU", 8 << 30, 6 << 30, cores=2)
        if d == "cpu"
        else DeviceInfo(d, "cuda", "Test GPU", 4 << 30, 3 << 30, compute_capability=(8, 0))
        for d in device_ids
    )
    probes = tuple(
        ProbeResult(
            device,
            dtype,
            "does not fit" if _verdict(text) == "does not fit" else _verdict(text),  # type: ignore[arg-type]
            0.01,
            4.2 if text.startswith("slow") else 1.0,
            error=text.removeprefix("unsupported: ") if text.startswith("unsupported") else None,
        )
        for (device, dtype), text in texts.items()
    )
    caps = Capabilities(devices, probes, "2.13.0", 0.5)
    if not with_assessment:
        return CapabilitiesReady(caps)
    verdicts = tuple(
        ChoiceVerdict(device, dtype, _verdict(text), text)  # type: ignore[arg-type]
        for (device, dtype), text in texts.items()
    )
    rec_device, rec_dtype = recommendation or ("cpu", "float32")
    assessment = Assessment(
        verdicts, Recommendation(rec_device, rec_dtype, None, REASON), warnings=()
    )
    return CapabilitiesReady(caps, assessment if recommendation else None)


def make_info(path: Path, *, declared: DType = "bfloat16", merge: bool = True) -> ModelInfo:
    """A `ModelInfo` as `inspect_model` would return for a small bfloat16 dare_ties merge."""
    return ModelInfo(
        path=path,
        name=path.name,
        model_type="llama",
        architectures=("LlamaForCausalLM",),
        declared_dtype=declared,
        stored_dtypes=(declared,),
        parameter_count=1_234_567,
        weights_format="safetensors",
        weight_files=(path / "model.safetensors",),
        weights_bytes_on_disk=2_469_134,
        has_tokenizer=True,
        has_chat_template=True,
        has_generation_config=True,
        context_length=2048,
        merge=MergeInfo("dare_ties", base_model="base-model", dtype=declared) if merge else None,
    )


class ScreenRoute:
    """The sink of a `FakeEngine` serving one screen: a detector result reaches ``target``
    later, through the app's message queue, as the app hands it over."""

    def __init__(self) -> None:
        self.target: Any = None

    def __call__(self, event: EngineEvent) -> None:
        if isinstance(event, CapabilitiesReady) and self.target is not None:
            self.target.app.call_later(self.target.show_capabilities, event)


def detect_engine(
    answer: DetectAnswer | None = None,
) -> tuple[FakeEngine, ScreenRoute]:
    """A `FakeEngine` whose ``detect`` answers ``answer(path, device)`` (default `make_event`)
    at once to the screen the test sets as the route's ``target``."""
    route = ScreenRoute()
    script = Script(capabilities=answer or (lambda _path, _device: make_event()))
    return FakeEngine(route, script, inline=True), route


class HostApp(App[None]):
    """A bare app with mergechat's themes that pushes one screen and records its result."""

    def __init__(
        self, make_screen: Callable[[], Screen[Any]], theme: str = "mergechat-dark"
    ) -> None:
        super().__init__()
        self._make_screen = make_screen
        self._theme_name = theme
        self.results: list[Any] = []
        self.theme_problems: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static("host", id="host")

    def on_mount(self) -> None:
        self.theme_problems = register_themes(self)
        self.theme = self._theme_name
        self.push_screen(self._make_screen(), self.results.append)
