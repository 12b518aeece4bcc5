"""`SettingsScreen` (F2): model, device and precision checked by the detector, generation values."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Button, Checkbox, Footer, Input, Label, Select, Static
from textual.worker import get_current_worker

from mergechat.core.api import CapabilitiesReady, EngineClient, ModelState
from mergechat.core.dtypes import DTYPES, DType
from mergechat.core.errors import MergechatError
from mergechat.core.model.info import ModelInfo
from mergechat.core.model.target import looks_remote
from mergechat.core.settings.config import Config, ModelConfig, remember_model, save_config
from mergechat.ui.path_completion import PathSuggester
from mergechat.ui.screens import settings_logic as logic
from mergechat.ui.screens import settings_view as view
from mergechat.ui.screens.confirm import ConfirmScreen
from mergechat.ui.screens.generation_form import GenerationForm

#: Seconds the path must stay unchanged before it is inspected and judged again.
DETECT_DELAY = 0.4


@dataclass(frozen=True)
class SettingsResult:
    """What Apply produced: the saved config and what the app must do with the loaded model."""

    config: Config
    #: Load the model again (new path, device or trust setting, or a dtype the engine must pick).
    reload: bool
    #: Switch the loaded model to this precision (only the dtype changed).
    switch_dtype: DType | None


def _inspect_model(path: Path) -> ModelInfo:
    from mergechat.core.model.inspection import inspect_model

    return inspect_model(path)


def _options(values: list[str], labels: dict[str, str] | None = None) -> list[tuple[Text, str]]:
    # Rich Text, not str: a Select would read "[...]" in a path as markup.
    return [(Text((labels or {}).get(v, v)), v) for v in values]


class SettingsScreen(Screen[SettingsResult | None]):
    """Edit and apply the config; every device x dtype shows the detector's verdict.

    The app forwards each `CapabilitiesReady` to `show_capabilities`. ``inspector`` reads a model
    path (default: `inspect_model`, on a thread); Apply saves to ``config_path`` (default: the
    usual config file).
    """

    CSS_PATH = "../styles/settings.tcss"
    AUTO_FOCUS = "#model-path"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="settings.cancel"),
        Binding("ctrl+s", "apply", "Apply", id="settings.apply"),
    ]

    def __init__(
        self,
        config: Config,
        engine: EngineClient,
        state: ModelState | None,
        *,
        inspector: Callable[[Path], ModelInfo] | None = None,
        config_path: Path | None = None,
    ) -> None:
        super().__init__()
        self._config = config
        self._engine = engine
        self._state = state
        self._inspector = inspector or _inspect_model
        self._config_path = config_path
        self._caps: CapabilitiesReady | None = None
        self._info: ModelInfo | None = None
        self._device_ids: tuple[str, ...] = ()
        self._last_request: tuple[str, str] | None = None
        self._inspected: str | None = None
        self._pending = 0
        self._timer: Timer | None = None
        #: A dismissal asked for before the screen finished mounting (held until it has).
        self._early_result: tuple[SettingsResult | None] | None = None

    def compose(self) -> ComposeResult:
        model, recent = self._config.model, self._config.recent_models
        with VerticalScroll(id="settings-body"):
            yield Static("Model", classes="section-title")
            with Horizontal(classes="form-row"):
                yield Label("Path", classes="form-label")
                yield Input(
                    model.path,
                    placeholder="model folder or .gguf file (→ completes)",
                    suggester=PathSuggester(),
                    id="model-path",
                    compact=True,
                )
            yield Static("", id="model-path-error", classes="field-error")
            with Horizontal(classes="form-row"):
                yield Label("Recent", classes="form-label")
                prompt = "recent models" if recent else "none yet"
                yield Select(_options(recent), prompt=prompt, id="recent", compact=True)
            with Horizontal(classes="form-row"):
                yield Label("Device", classes="form-label")
                devices = ["auto"] + ([model.device] if model.device != "auto" else [])
                yield Select(
                    _options(devices),
                    value=model.device,
                    allow_blank=False,
                    id="device",
                    compact=True,
                )
            with Horizontal(classes="form-row"):
                yield Label("Precision", classes="form-label")
                dtype = model.dtype if model.dtype in DTYPES else "auto"
                yield Select(
                    _options(["auto", *DTYPES]),
                    value=dtype,
                    allow_blank=False,
                    id="dtype",
                    compact=True,
                )
            with Horizontal(classes="form-row"):
                yield Label("", classes="form-label")
                yield Checkbox(
                    "Trust remote code (runs Python shipped with the model)",
                    model.trust_remote_code,
                    id="trust",
                    compact=True,
                )
            yield Static("", id="model-info")
            yield Static("", id="verdicts")
            yield Static("", id="recommendation")
            yield Static("", id="choice-status")
            yield GenerationForm(self._config.generation, id="generation")
        with Horizontal(id="settings-buttons"):
            yield Button("Apply (ctrl+s)", id="apply", variant="primary")
            yield Button("Cancel (esc)", id="cancel")
        yield Footer()

    def on_mount(self) -> None:
        state = self._state
        if state is not None:
            info = self.query_one("#model-info", Static)
            info.border_subtitle = f"loaded now: {state.name} · {state.device} · {state.dtype}"
        if self._caps is not None:  # results handed over before the screen was shown
            self._update_devices()
        self._refresh_detector()
        self._settle()
        if self._early_result is not None:
            # Queued behind the rest of the mount, so every child has finished mounting.
            self.call_later(self._close, self._early_result[0])

    def _close(self, result: SettingsResult | None) -> None:
        """Dismiss with ``result``; before the screen is mounted, as soon as it is.

        Popping the screen while its widgets are still mounting prunes them under their own
        mount handlers (Textual's Select then fails with ``NoMatches '#label'``), as when Escape
        arrives right after F2.
        """
        if self.is_mounted:
            self.dismiss(result)
        else:
            self._early_result = (result,)

    # -- detection ----------------------------------------------------------------------------
    def _path_value(self) -> str:
        return self.query_one("#model-path", Input).value.strip()

    def _select_value(self, select_id: str) -> str:
        value = self.query_one(f"#{select_id}", Select).value
        return value if isinstance(value, str) else "auto"

    def _schedule(self, delay: float = DETECT_DELAY) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(delay, self._settle)

    def _settle(self) -> None:
        """Inspect a new path, and ask the engine to judge the current path and device."""
        path_text = self._path_value()
        if path_text != self._inspected:
            self._inspected, self._info = path_text, None
            if path_text and looks_remote(path_text):
                # A server's model is asked on Apply; there are no files here to read.
                self._show_model(
                    Content.styled("a model on a server: asked on Apply", "$text-muted")
                )
                return
            if path_text:
                self._show_model(Content.styled("reading the model's files…", "$text-muted"))
                self._inspect(path_text)
                return  # the detector is asked once the inspection has answered
            self._show_model(Content.styled("no model chosen", "$text-muted"))
        self._request_detect()

    def _request_detect(self) -> None:
        """Ask the engine for verdicts on the current device, for the model if it inspected well.

        A path that failed inspection is left out: the engine would only fail on it again (a
        second notice of the same error) and answer nothing, leaving "measuring…" up for good.
        """
        device = self._select_value("device")
        model = Path(self._inspected).expanduser() if self._inspected and self._info else None
        if (str(model or ""), device) != self._last_request:
            self._last_request = (str(model or ""), device)
            self._pending += 1
            self._engine.detect(model, device)
            self._refresh_detector()

    @work(thread=True, exclusive=True, group="settings-inspect")
    def _inspect(self, path_text: str) -> None:
        info: ModelInfo | None = None
        try:
            info, error = self._inspector(Path(path_text)), None
        except MergechatError as exc:
            error = str(exc)
        except Exception as exc:  # a broken file must not take the screen down
            error = f"cannot read the model: {exc}"
        if not get_current_worker().is_cancelled:
            with contextlib.suppress(RuntimeError):  # the app closed meanwhile
                self.app.call_from_thread(self._inspected_model, path_text, info, error)

    def _inspected_model(self, path_text: str, info: ModelInfo | None, error: str | None) -> None:
        if not self.is_attached or path_text != self._path_value():
            return  # closed, or typed on since: a newer inspection is coming
        self._info = info
        trusted = self.query_one("#trust", Checkbox).value
        self._show_model(view.model_text(info, error, trusted=trusted))
        self._refresh_detector()
        self._request_detect()

    def _show_model(self, content: Content) -> None:
        self.query_one("#model-info", Static).update(content)

    def show_capabilities(self, event: CapabilitiesReady) -> None:
        """Show the detector's results (the app forwards every `CapabilitiesReady` here)."""
        self._caps = event
        self._pending = max(0, self._pending - 1)
        if self.is_mounted and self.is_attached:
            self._update_devices()
            self._refresh_detector()

    def _update_devices(self) -> None:
        assert self._caps is not None
        devices = self._caps.capabilities.devices
        ids = tuple(d.id for d in devices)
        if ids == self._device_ids:
            return
        self._device_ids = ids
        current = self._select_value("device")
        wanted = "auto" if current == "auto" else logic.device_id_for(current, ids)
        labels = {d.id: f"{d.id}  {d.name}" for d in devices}
        select = self.query_one("#device", Select)
        with self.prevent(Select.Changed):
            select.set_options(_options(["auto", *ids], labels))
            select.value = wanted or "auto"
        if wanted is None:
            self.notify(
                f"device {current} is not on this machine; using auto",
                severity="warning",
                markup=False,
            )
            self._schedule(0.05)

    # -- verdicts -----------------------------------------------------------------------------
    def _choice(self) -> tuple[str | None, DType | None]:
        device, dtype = self._select_value("device"), self._select_value("dtype")
        return logic.resolve_choice(device, dtype, self._caps)

    def _choice_row(self) -> logic.VerdictRow | None:
        return logic.find_verdict(logic.verdict_rows(self._caps), *self._choice())

    def _native_dtype(self) -> DType | None:
        return self._info.native_dtype if self._info is not None else None

    def _refresh_detector(self) -> None:
        assessment = self._caps.assessment if self._caps else None
        device, dtype = self._choice()
        verdicts = self.query_one("#verdicts", Static)
        verdicts.border_title = "Detector" + (" · measuring…" if self._pending else "")
        rows = logic.verdict_rows(self._caps)
        verdicts.update(view.verdict_lines(rows, device, dtype, assessment))
        self.query_one("#recommendation", Static).update(view.recommendation_text(assessment))
        row = logic.find_verdict(rows, device, dtype)
        reasons = logic.confirmation_reasons(row, self._select_value("dtype"), self._native_dtype())
        self.query_one("#choice-status", Static).update(
            view.choice_text(row, device, dtype, reasons)
        )
        blocked = row is not None and row.verdict in logic.BLOCKING
        self.query_one("#apply", Button).disabled = blocked

    # -- events -------------------------------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "model-path":
            self.query_one("#model-path-error", Static).update("")
            self._schedule()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_apply()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "recent" and isinstance(event.value, str):
            self.query_one("#model-path", Input).value = event.value
        elif event.select.id == "device":
            self._schedule(0.1)
            self._refresh_detector()
        elif event.select.id == "dtype":
            self._refresh_detector()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if self._info is not None:
            self._show_model(view.model_text(self._info, None, trusted=event.value))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "apply":
            self.action_apply()
        elif event.button.id == "cancel":
            self.action_cancel()

    # -- apply --------------------------------------------------------------------------------
    def action_cancel(self) -> None:
        """Leave without changing anything."""
        self._close(None)

    def action_apply(self) -> None:
        """Validate every field, confirm a slow or risky choice, save, and dismiss."""
        if not self.is_mounted:
            return  # the fields are not there to read yet
        generation, invalid = self.query_one(GenerationForm).read()
        path_text = self._path_value()
        # Never raises: a NUL, ~unknown-user or an over-long name is a message, not a crash.
        problem = logic.model_path_problem(path_text)
        if problem is not None:
            self.query_one("#model-path-error", Static).update(
                Content.styled(problem, "$text-error")
            )
            invalid.insert(0, self.query_one("#model-path", Input))
        if invalid or generation is None:
            invalid[0].focus()
            self.notify(f"{len(invalid)} field(s) need fixing", severity="error")
            return
        row = self._choice_row()
        if row is not None and row.verdict in logic.BLOCKING:
            self.notify(f"{row.dtype} on {row.device}: {row.text}", severity="error", markup=False)
            return
        device, dtype = self._select_value("device"), self._select_value("dtype")
        model = ModelConfig(
            path=logic.config_path(path_text),
            device=device,
            dtype=dtype,
            trust_remote_code=self.query_one("#trust", Checkbox).value,
        )
        new = remember_model(replace(self._config, model=model, generation=generation), model.path)
        old = self._config.model
        # A choice already saved was confirmed before: ask only about a new one.
        changed = (device, dtype) != (old.device, old.dtype)
        reasons = logic.confirmation_reasons(row, dtype, self._native_dtype()) if changed else []
        if not reasons:
            self._finish(new)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._finish(new)

        self.app.push_screen(ConfirmScreen("Use this precision?", reasons), answered)

    def _finish(self, new: Config) -> None:
        assessment = self._caps.assessment if self._caps else None
        rec = assessment.recommendation if assessment else None
        reload, switch = logic.decide_reload(self._config, new, self._state, rec)
        try:
            save_config(new, self._config_path, previous=self._config)
        except MergechatError as exc:
            self.notify(f"{exc}; applied for this session only", severity="error", markup=False)
        self._close(SettingsResult(new, reload=reload, switch_dtype=switch))
