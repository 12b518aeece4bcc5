"""`ModelCheckScreen`: the settings screen's model check, as the path and device are typed.

A new path is inspected on a thread, then the engine's detector judges each device x dtype; the
verdicts, the recommendation and what the current choice means are shown as they come.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rich.text import Text
from textual import work
from textual.content import Content
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Button, Checkbox, Input, Select, Static
from textual.worker import get_current_worker

from mergechat.core.api import CapabilitiesReady, EngineClient
from mergechat.core.dtypes import DType
from mergechat.core.errors import MergechatError
from mergechat.core.model.info import ModelInfo
from mergechat.core.model.target import looks_remote
from mergechat.ui.messages import CapabilitiesChanged
from mergechat.ui.screens import settings_logic as logic
from mergechat.ui.screens import settings_view as view

#: Seconds the path must stay unchanged before it is inspected and judged again.
DETECT_DELAY = 0.4

ResultT = TypeVar("ResultT")


def _inspect_model(path: Path) -> ModelInfo:
    from mergechat.core.detect.model_support import inspect_model

    return inspect_model(path)


def options(values: list[str], labels: dict[str, str] | None = None) -> list[tuple[Text, str]]:
    """A Select's options; Rich Text, not str: a Select would read "[...]" in a path as markup."""
    return [(Text((labels or {}).get(v, v)), v) for v in values]


class ModelCheckScreen(Screen[ResultT]):
    """Inspects the path and shows the verdicts (a subclass composes the fields and applies).

    ``inspector`` reads a model path (default: `inspect_model`, on a thread); ``capabilities``
    are the detector's results known when the screen opens.
    """

    def __init__(
        self,
        engine: EngineClient,
        *,
        inspector: Callable[[Path], ModelInfo] | None = None,
        capabilities: CapabilitiesReady | None = None,
    ) -> None:
        super().__init__()
        self._engine = engine
        self._inspector = inspector or _inspect_model
        self._caps = capabilities
        self._info: ModelInfo | None = None
        self._device_ids: tuple[str, ...] = ()
        self._last_request: tuple[str, str] | None = None
        self._inspected: str | None = None
        self._pending = 0
        self._timer: Timer | None = None

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

    def on_capabilities_changed(self, message: CapabilitiesChanged) -> None:
        self.show_capabilities(message.event)

    def show_capabilities(self, event: CapabilitiesReady) -> None:
        """Show the detector's results (every `CapabilitiesChanged` while the screen is open)."""
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
            select.set_options(options(["auto", *ids], labels))
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
