"""`SettingsScreen` (F2): model, device and precision checked by the detector, generation values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.widgets import Button, Checkbox, Footer, Input, Label, Select, Static

from mergechat.core.api import CapabilitiesReady, EngineClient, ModelState
from mergechat.core.dtypes import DTYPES, DType
from mergechat.core.errors import MergechatError
from mergechat.core.model.info import ModelInfo
from mergechat.core.settings.config import Config, ModelConfig, remember_model, save_config
from mergechat.ui.path_completion import PathSuggester
from mergechat.ui.screens import settings_logic as logic
from mergechat.ui.screens import settings_view as view
from mergechat.ui.screens.confirm import ConfirmScreen
from mergechat.ui.screens.generation_form import GenerationForm
from mergechat.ui.screens.model_check import ModelCheckScreen, options


@dataclass(frozen=True)
class SettingsResult:
    """What Apply produced: the saved config and what the app must do with the loaded model."""

    config: Config
    #: Load the model again (new path, device or trust setting, or a dtype the engine must pick).
    reload: bool
    #: Switch the loaded model to this precision (only the dtype changed).
    switch_dtype: DType | None


class SettingsScreen(ModelCheckScreen[SettingsResult | None]):
    """Edit and apply the config; every device x dtype shows the detector's verdict.

    ``capabilities`` are the detector's results known at opening (later ones arrive as
    `CapabilitiesChanged`). ``inspector`` reads a model path (default: `inspect_model`, on a
    thread); Apply saves to ``config_path`` (default: the usual config file).
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
        capabilities: CapabilitiesReady | None = None,
    ) -> None:
        super().__init__(engine, inspector=inspector, capabilities=capabilities)
        self._config = config
        self._state = state
        self._config_path = config_path
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
                yield Select(options(recent), prompt=prompt, id="recent", compact=True)
            with Horizontal(classes="form-row"):
                yield Label("Device", classes="form-label")
                devices = ["auto"] + ([model.device] if model.device != "auto" else [])
                yield Select(
                    options(devices),
                    value=model.device,
                    allow_blank=False,
                    id="device",
                    compact=True,
                )
            with Horizontal(classes="form-row"):
                yield Label("Precision", classes="form-label")
                dtype = model.dtype if model.dtype in DTYPES else "auto"
                yield Select(
                    options(["auto", *DTYPES]),
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
