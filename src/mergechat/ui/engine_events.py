"""`EngineEventRouter`: the one place where engine events change the session and the screens.

It writes the `Session` and tells the chat screen what changed through `ChatPort`; open screens
get the detector's results as a `CapabilitiesChanged` message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

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
from mergechat.ui.messages import CapabilitiesChanged
from mergechat.ui.protocols import EventHost
from mergechat.ui.runtime import freeze_long_lived_objects
from mergechat.ui.verdicts import faster_text

_SEVERITY: dict[str, Literal["information", "warning", "error"]] = {
    "info": "information",
    "warning": "warning",
    "error": "error",
}


def error_text(message: str, hint: str | None) -> str:
    """An error as the app shows it: the CLI's message, then ``hint: ...`` on its own line."""
    return f"{message}\nhint: {hint}" if hint else message


class EngineEventRouter:
    """Applies each `EngineEvent`: the session, the status bar, the chat, notices, open screens.

    Runs on the UI thread (the app calls `dispatch` from its message handler); every handler is
    quick and synchronous so keys are never queued behind a long render.
    """

    def __init__(self, app: EventHost) -> None:
        self.app = app
        self.session = app.session
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
        self.app.chat.show_load_progress(event.stage, event.fraction, event.detail)

    def _model_loaded(self, event: ModelLoaded) -> None:
        app, session, state = self.app, self.session, event.state
        # torch and transformers are imported now: keep their objects out of later GC passes.
        freeze_long_lived_objects()
        session.model_state, session.loaded_request = state, session.pending_request
        app.chat.hide_load_progress()
        app.chat.show_model(state, new=True)
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
        app.chat.use_model(state.path)
        if not self._conversation_opened:
            # Only the first model: a later load keeps the conversation on screen.
            self._conversation_opened = True
            app.open_startup_conversation(state.path)
        # Verdicts for the precision menu: probes are cached, so this is quick after the load.
        app.engine.detect(state.path, state.device_id or "auto")

    def _load_failed(self, event: LoadFailed) -> None:
        app, session = self.app, self.session
        app.chat.hide_load_progress()
        previous, session.model_state = session.model_state, event.state
        text = error_text(event.message, event.hint)
        if event.state is not None:
            app.chat.show_model(event.state)
        else:
            app.chat.show_no_model()
            # The engine let the previous model go before the failure: bring it back.
            if previous is not None and app.restore_model(previous):
                text += f"\nLoading {previous.name} again."
        if session.capabilities is None:
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
        self.session.model_state = event.state
        self.app.chat.show_model(event.state)
        text = f"Now {event.state.dtype} ({event.method}, {event.seconds:.2f} s)."
        if event.fidelity is not None:
            text += f"\n{event.fidelity.summary()}"
        self.app.notify(text, title="Precision switched", timeout=15, markup=False)
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
        app, session = self.app, self.session
        if event.state is not None:
            session.model_state = event.state
            app.chat.show_model(event.state)
        else:
            app.chat.set_phase("ready" if session.model_state is not None else "error")
        text = error_text(event.message, event.hint)
        app.notify(
            text, title="Precision switch failed", severity="error", timeout=30, markup=False
        )

    def _capabilities(self, event: CapabilitiesReady) -> None:
        self.session.capabilities = event
        # The settings screen shows verdicts; it takes every result while it is open.
        for screen in self.app.screen_stack:
            screen.post_message(CapabilitiesChanged(event))

    def _notice(self, event: EngineNotice) -> None:
        severity = _SEVERITY.get(event.level, "warning")
        self.app.notify(event.message, severity=severity, timeout=10, markup=False)

    def _engine_crashed(self, event: EngineCrashed) -> None:
        """The engine process died: no model now, the chat stays, F2 loads one again."""
        app, session = self.app, self.session
        session.model_state = session.loaded_request = None
        app.chat.hide_load_progress()
        app.chat.show_no_model()
        key = app.config.keymap.get("settings", "f2").split(",")[0].strip().upper()
        text = f"{event.message}\nThe chat is kept: press {key} to load a model again."
        if event.log:
            text += f"\nDetails: {event.log}"
        app.notify(text, title="The engine stopped", severity="error", timeout=60, markup=False)
