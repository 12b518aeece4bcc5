"""`EngineEventRouter`: the one place where engine events change the app and its screens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from mergechat.core.api import (
    CapabilitiesReady,
    EngineCrashed,
    EngineEvent,
    EngineNotice,
    LoadFailed,
    LoadProgress,
    ModelLoaded,
    ModelState,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    SwitchFailed,
    SwitchFinished,
    SwitchStarted,
)
from mergechat.ui.runtime import freeze_long_lived_objects
from mergechat.ui.verdicts import device_id, faster_text

if TYPE_CHECKING:
    from mergechat.ui.app import MergechatApp

_SEVERITY: dict[str, Literal["information", "warning", "error"]] = {
    "info": "information",
    "warning": "warning",
    "error": "error",
}


def error_text(message: str, hint: str | None) -> str:
    """An error as the app shows it: the CLI's message, then ``hint: ...`` on its own line."""
    return f"{message}\nhint: {hint}" if hint else message


class EngineEventRouter:
    """Applies each `EngineEvent` to the app: status bar, chat, notifications, open screens.

    Runs on the UI thread (the app calls `dispatch` from its message handler); every handler is
    quick and synchronous so keys are never queued behind a long render.
    """

    def __init__(self, app: MergechatApp) -> None:
        self.app = app
        self._frozen_after_reply = False
        self._conversation_opened = False
        chat = app.chat
        self._handlers: dict[type[EngineEvent], Callable[[Any], None]] = {
            LoadProgress: self._load_progress,
            ModelLoaded: self._model_loaded,
            LoadFailed: self._load_failed,
            ReplyStarted: chat.reply_started,
            ReplyFinished: self._reply_finished,
            ReplyFailed: chat.reply_failed,
            SwitchStarted: self._switch_started,
            SwitchFinished: self._switch_finished,
            SwitchFailed: self._switch_failed,
            CapabilitiesReady: self._capabilities,
            EngineNotice: self._notice,
            EngineCrashed: self._engine_crashed,
        }

    def dispatch(self, event: EngineEvent) -> None:
        """Handle one event (unknown event types are ignored)."""
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _load_progress(self, event: LoadProgress) -> None:
        chat = self.app.chat
        chat.set_phase("loading", progress=event.fraction)
        chat.load_progress.show_progress(event.stage, event.fraction, event.detail)

    def _model_loaded(self, event: ModelLoaded) -> None:
        app, chat, state = self.app, self.app.chat, event.state
        # torch and transformers are imported now: keep their objects out of later GC passes.
        freeze_long_lived_objects()
        app.model_state, app.loaded_request = state, app.pending_request
        chat.load_progress.hide()
        info = chat.status.info.with_model(state)
        chat.status.set_info(replace(info, tokens_per_s=None, context_used=0))
        chat.set_phase("ready")
        # Engine texts quote paths and library errors: never parse them as markup.
        app.notify(
            f"{state.name}: {state.dtype} on {state.device}. {state.reason}".strip(),
            title="Model loaded",
            markup=False,
        )
        for warning in event.warnings:
            app.notify(warning, severity="warning", timeout=10, markup=False)
        self._say_faster(state)
        app.remember_loaded_model(state)
        chat.use_model(state.path)
        if not self._conversation_opened:
            # Only the first model: a later load keeps the conversation on screen.
            self._conversation_opened = True
            app.app_history.startup_conversation(state.path)
        # Verdicts for the precision menu: probes are cached, so this is quick after the load.
        app.engine.detect(state.path, device_id(state.device))

    def _load_failed(self, event: LoadFailed) -> None:
        app, chat = self.app, self.app.chat
        chat.load_progress.hide()
        previous, app.model_state = app.model_state, event.state
        text = error_text(event.message, event.hint)
        if event.state is not None:
            chat.status.set_info(chat.status.info.with_model(event.state))
            chat.set_phase("ready")
        else:
            chat.set_phase(
                "error",
                model="",
                device="",
                dtype="",
                merge_method=None,
                context_max=None,
                fallback_template=False,
            )
            # The engine let the previous model go before the failure: bring it back.
            if previous is not None and app.restore_model(previous):
                text += f"\nLoading {previous.name} again."
        if app.capabilities is None:
            # Which devices exist, for the settings screen the user will open to fix this.
            app.engine.detect(None, "auto")
        app.notify(text, title="Load failed", severity="error", timeout=30, markup=False)

    def _reply_finished(self, event: ReplyFinished) -> None:
        self.app.chat.reply_finished(event)
        if not self._frozen_after_reply:
            self._frozen_after_reply = True
            freeze_long_lived_objects()

    def _switch_started(self, event: SwitchStarted) -> None:
        self.app.chat.set_phase("switching")

    def _switch_finished(self, event: SwitchFinished) -> None:
        app, chat = self.app, self.app.chat
        app.model_state = event.state
        chat.status.set_info(chat.status.info.with_model(event.state))
        chat.set_phase("ready")
        text = f"Now {event.state.dtype} ({event.method}, {event.seconds:.2f} s)."
        if event.fidelity is not None:
            text += f"\n{event.fidelity.summary()}"
        app.notify(text, title="Precision switched", timeout=15, markup=False)
        self._say_faster(event.state)

    def _say_faster(self, state: ModelState) -> None:
        """The once-per-model-and-machine note that a safe precision makes turns faster."""
        speed = state.speed
        if speed is None or not speed.say_faster:
            return
        key = self.app.config.keymap.get("precision", "ctrl+t").split(",")[0].strip()
        text = faster_text(speed, key)
        if text is not None:
            self.app.notify(text, title="Faster precision", timeout=20, markup=False)

    def _switch_failed(self, event: SwitchFailed) -> None:
        app, chat = self.app, self.app.chat
        if event.state is not None:
            app.model_state = event.state
            chat.status.set_info(chat.status.info.with_model(event.state))
        chat.set_phase("ready" if app.model_state is not None else "error")
        text = error_text(event.message, event.hint)
        app.notify(
            text, title="Precision switch failed", severity="error", timeout=30, markup=False
        )

    def _capabilities(self, event: CapabilitiesReady) -> None:
        self.app.capabilities = event
        # The settings screen shows verdicts; it takes every result while it is open.
        for screen in self.app.screen_stack:
            show = getattr(screen, "show_capabilities", None)
            if callable(show):
                show(event)

    def _notice(self, event: EngineNotice) -> None:
        severity = _SEVERITY.get(event.level, "warning")
        self.app.notify(event.message, severity=severity, timeout=10, markup=False)

    def _engine_crashed(self, event: EngineCrashed) -> None:
        """The engine process died: no model now, the chat stays, F2 loads one again."""
        app, chat = self.app, self.app.chat
        app.model_state = app.loaded_request = None
        chat.load_progress.hide()
        chat.set_phase(
            "error",
            model="",
            device="",
            dtype="",
            merge_method=None,
            context_max=None,
            fallback_template=False,
        )
        key = app.config.keymap.get("settings", "f2").split(",")[0].strip().upper()
        text = f"{event.message}\nThe chat is kept: press {key} to load a model again."
        if event.log:
            text += f"\nDetails: {event.log}"
        app.notify(text, title="The engine stopped", severity="error", timeout=60, markup=False)
