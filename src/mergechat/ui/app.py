"""`MergechatApp`: paints at once, builds the engine off the UI thread, routes its events.

No torch/transformers import here (a test enforces it): the engine module is imported by a worker
thread after the first frame, and the UI only sees `mergechat.core.api` types.
"""

from __future__ import annotations

import os

# Textual reads its frame-rate cap when it is first imported. At 120 fps a keypress waits half as
# long for the next screen update while a reply streams (BENCHMARKS.md). A user's own TEXTUAL_FPS
# wins.
os.environ.setdefault("TEXTUAL_FPS", "120")

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import BindingType
from textual.screen import Screen
from textual.theme import Theme

from mergechat.core.api import (
    CapabilitiesReady,
    EngineEvent,
    LoadRequest,
    ModelState,
)
from mergechat.core.dtypes import DType
from mergechat.core.errors import MergechatError
from mergechat.core.model.target import looks_remote, precision_help, shown_model, url_text
from mergechat.core.remote.routing import routing_factory
from mergechat.core.settings import recent_models
from mergechat.core.settings.config import Config, load_config, save_config
from mergechat.core.visible import escape_control
from mergechat.ui.app_history import AppHistory
from mergechat.ui.bindings import APP_BINDINGS, help_rows, keymap_problems, prompt_placeholder
from mergechat.ui.commands import MergechatCommands
from mergechat.ui.engine_events import EngineEventRouter
from mergechat.ui.engine_proxy import DeferredEngine
from mergechat.ui.messages import EngineEventMessage, EngineReady, EngineStartFailed
from mergechat.ui.notices import show_settings_problems
from mergechat.ui.options import AppOptions
from mergechat.ui.precision_switch import PrecisionSwitcher
from mergechat.ui.runtime import EngineFactory, freeze_long_lived_objects, real_engine
from mergechat.ui.screens.chat import ChatScreen
from mergechat.ui.session import Session
from mergechat.ui.start_config import effective_config, load_request
from mergechat.ui.themes import register_themes, resolve_theme_name
from mergechat.ui.widgets.status_bar import StatusInfo

if TYPE_CHECKING:
    from mergechat.ui.screens.conversations import ConversationsScreen
    from mergechat.ui.screens.settings import SettingsResult


class MergechatApp(App[int]):
    """The full-screen chat client. ``engine_factory`` is called on a worker thread."""

    # Absolute, so subclasses defined elsewhere (tests, benchmarks) find it too.
    CSS_PATH = Path(__file__).parent / "styles" / "app.tcss"
    TITLE = "mergechat"
    BINDINGS: ClassVar[list[BindingType]] = list(APP_BINDINGS)
    COMMANDS: ClassVar[set[Any]] = {MergechatCommands}

    def __init__(
        self,
        options: AppOptions | None = None,
        *,
        engine_factory: EngineFactory | None = None,
        config_path: Path | None = None,
    ) -> None:
        super().__init__()
        self.options = options or AppOptions()
        # Local models on `real_engine`, server URLs on the remote client (F2 moves between).
        self._engine_factory = engine_factory or routing_factory(
            real_engine, self.options.model_path
        )
        self._config_path = config_path
        #: What the config file holds (saved back); `config` adds the command line's values.
        self.file_config, problems = load_config(config_path)
        recent = recent_models.load_recent(self.file_config.recent_models)
        self.file_config = replace(self.file_config, recent_models=recent)
        self.config, option_problems = effective_config(self.file_config, self.options)
        #: Every settings problem found (notices show the first few; F1 lists them all).
        self.settings_problems = [*problems, *option_problems]
        self.engine = DeferredEngine()
        path = self.options.model_path
        # The first frame already says what is coming: the model's name and "loading".
        first = StatusInfo("loading", model=shown_model(path)) if path else StatusInfo("no model")
        #: The phase, the model, the detector's results, the queued switch: one state object.
        self.session = Session(phase=first.phase)
        self.app_history = AppHistory(self)
        #: Saves the chat as it goes (its store is opened once the first frame is shown).
        self.history = self.app_history.history
        self.chat = ChatScreen(
            self.engine,
            lambda: self.config.generation,
            first,
            history=self.history,
            session=self.session,
        )
        self.chat.prompt_placeholder = prompt_placeholder(self.config.keymap)
        self._startup_theme = ""
        self.events = EngineEventRouter(self)
        #: Switches now, or queues one switch behind a streaming reply.
        self.switcher = PrecisionSwitcher(self)

    def notify(self, message: str, *, title: str = "", **kwargs: Any) -> None:
        """Every notice shows its text as text: a path or a model's error cannot drive the
        terminal (control characters escaped)."""
        message, title = escape_control(message, keep_lines=True), escape_control(title)
        super().notify(message, title=title, **kwargs)

    def get_default_screen(self) -> Screen[Any]:
        return self.chat

    # The session's fields, read where the app was asked before (tests, benchmarks, history).
    @property
    def model_state(self) -> ModelState | None:
        """The model loaded now (`Session.model_state`)."""
        return self.session.model_state

    @model_state.setter
    def model_state(self, state: ModelState | None) -> None:
        self.session.model_state = state

    @property
    def capabilities(self) -> CapabilitiesReady | None:
        """The detector's latest results (`Session.capabilities`)."""
        return self.session.capabilities

    # -- start-up ---------------------------------------------------------------------------------
    def on_mount(self) -> None:
        problems = register_themes(self)
        theme, problem = resolve_theme_name(self.available_themes, self.config.theme)
        problems += [problem] if problem else []
        self._startup_theme = theme
        self.theme = theme
        self.theme_changed_signal.subscribe(self, self._on_theme_changed)
        self.set_keymap(self.config.keymap)
        self.settings_problems += problems
        show_settings_problems(self, self.settings_problems)

    def on_ready(self) -> None:
        # The first frame is on screen, but Textual's footer fills in on the next one: start the
        # rest after it, so the engine thread's imports (seconds of GIL) do not hold it up.
        self.call_after_refresh(self._start_up)

    def _start_up(self) -> None:
        # Open the history and start the engine (its import takes seconds). The first model
        # load, which resumes a conversation, comes after both.
        self.app_history.open()
        freeze_long_lived_objects()
        self._build_engine()
        if self.config.keymap:
            # Checking the ids imports every screen module: not while the first frame is written.
            self.set_timer(0.5, self._check_keymap)
        if self.config.model.device != "auto":
            # Devices first, so a settings screen opened during the load can already tell that a
            # device named in the config or on the command line is missing here.
            self.engine.detect(None, "auto")
        if self.options.model_path is not None:
            self._load(load_request(self.config))
        else:
            self.chat.set_phase("no model")
            self.action_settings()

    def _check_keymap(self) -> None:
        problems = keymap_problems(self.config.keymap)
        self.settings_problems += problems
        show_settings_problems(self, problems)

    @work(thread=True, exclusive=True, group="engine-start", exit_on_error=False)
    def _build_engine(self) -> None:
        # Off the UI thread and after the first frame, so starting the engine never delays it.
        try:
            engine = self._engine_factory(self._sink)
            engine.start()
        except Exception as error:  # report, keep the app usable (settings, help, quit)
            self.post_message(EngineStartFailed(f"{type(error).__name__}: {error}"))
            return
        self.post_message(EngineReady(engine))

    def _sink(self, event: EngineEvent) -> None:
        # Called on the engine thread; post_message is thread-safe.
        self.post_message(EngineEventMessage(event))

    def on_engine_ready(self, message: EngineReady) -> None:
        self.engine.attach(message.engine)

    def on_engine_start_failed(self, message: EngineStartFailed) -> None:
        self.chat.hide_load_progress()
        self.chat.set_phase("error")
        self.notify(
            message.message,
            title="The engine did not start",
            severity="error",
            timeout=30,
            markup=False,
        )

    def _load(self, request: LoadRequest, *, restore: bool = False) -> None:
        if self.chat.conversation.busy:
            self.engine.cancel()
        self.switcher.drop("a model is loading")
        self.session.pending_request, self.session.restoring = request, restore
        model = shown_model(request.path)
        detail = url_text(request.path)
        self.chat.show_load_progress("starting", 0.0, detail, tokens_per_s=None, model=model)
        self.engine.load(request)

    def on_unmount(self) -> None:
        self.app_history.close()
        self.engine.shutdown(timeout=1.0)

    # -- engine events ----------------------------------------------------------------------------
    def on_engine_event_message(self, message: EngineEventMessage) -> None:
        self.events.dispatch(message.event)

    def restore_model(self, previous: ModelState) -> bool:
        """Load ``previous`` again after a failed load released it; False if that is not tried.

        Tried once: when the failed load was itself such a restore, the app stays without a model.
        """
        request, restoring = self.session.loaded_request, self.session.restoring
        self.session.restoring = False
        if restoring or request is None:
            return False
        # In the precision it had (a switch may have changed it since it was loaded).
        self._load(replace(request, path=previous.path, dtype=previous.dtype), restore=True)
        return True

    def remember_loaded_model(self, state: ModelState) -> None:
        """Put the model that just loaded first in the recent list (the state file, not the
        config: a load never rewrites the user's file)."""
        recent = recent_models.remember(self.file_config.recent_models, state.path)
        self.file_config = replace(self.file_config, recent_models=recent)
        self.config = replace(self.config, recent_models=recent)

    def open_startup_conversation(self, model_path: Path) -> None:
        """After the first load: reopen the model's last conversation, or start a new one."""
        self.app_history.startup_conversation(model_path)

    # -- actions ----------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("settings", "precision", "help", "conversations"):
            return self.screen is self.chat
        return True

    def action_conversations(self) -> None:
        """List the saved conversations: open, rename or delete them."""
        self.app_history.show_list()

    def on_conversations_screen_deleted(self, message: ConversationsScreen.Deleted) -> None:
        self.app_history.deleted(message.conversation_id)

    def action_help(self) -> None:
        """Show every key (with the user's keymap applied)."""
        from mergechat.ui.screens.help import HelpScreen

        self.push_screen(HelpScreen(help_rows(self.config.keymap), self.settings_problems))

    def action_settings(self) -> None:
        """Open the settings screen; applying it reloads or switches as needed."""
        from mergechat.ui.screens.settings import SettingsScreen

        # The devices and probes at once (a device missing here is caught on open); the
        # model's assessment comes fresh once the screen's path has been inspected.
        known = self.session.capabilities
        screen = SettingsScreen(
            self.config,
            self.engine,
            self.session.model_state,
            config_path=self._config_path,
            capabilities=CapabilitiesReady(known.capabilities) if known is not None else None,
        )
        self.push_screen(screen, self._on_settings_closed)

    def _on_settings_closed(self, result: SettingsResult | None) -> None:
        if result is None:
            return
        # The settings screen saved it; from now on it is both the file's and this run's config.
        self.config = self.file_config = result.config
        if result.reload:
            if not result.config.model.path:
                self.notify("Choose a model path first.", severity="warning")
                return
            self._load(load_request(self.config))
        elif result.switch_dtype is not None:
            self.switch_precision(result.switch_dtype)

    def action_precision(self) -> None:
        """Open the precision menu for the loaded model (during a reply: switch after it)."""
        state = self.session.model_state
        if state is not None and looks_remote(state.path):
            help_text = precision_help(state.path)
            self.notify(help_text, title="Precision", timeout=15, markup=False)
            return
        menu = self.switcher.menu()
        if menu is not None:
            self.push_screen(*menu)

    def switch_precision(self, dtype: DType) -> None:
        """Switch the loaded model to ``dtype`` now, or after the reply that is streaming."""
        self.switcher.request(dtype)

    async def action_quit(self) -> None:
        """Quit with exit code 0 (the terminal is restored by Textual)."""
        self.history.close()
        self.exit(0)

    # -- config -----------------------------------------------------------------------------------
    def _on_theme_changed(self, theme: Theme) -> None:
        # The first signal may be the start-up theme being applied: not a user choice to save.
        startup, self._startup_theme = self._startup_theme, ""
        if theme.name in (self.file_config.theme, startup):
            return
        previous = self.file_config
        self.config = replace(self.config, theme=theme.name)
        self.file_config = replace(self.file_config, theme=theme.name)
        self._save_config(previous)

    def _save_config(self, previous: Config) -> None:
        # Only what changed since ``previous`` is written; the rest of the file stays the user's.
        try:
            save_config(self.file_config, self._config_path, previous=previous)
        except MergechatError as error:
            self.notify(str(error), title="Settings not saved", severity="error", markup=False)


def run_app(options: AppOptions) -> int:
    """Run the app until the user quits; return the exit code (0 after ctrl+q)."""
    app = MergechatApp(options)
    try:
        app.run()
    finally:
        if app.app_history.exit_watchdog is not None:
            app.app_history.exit_watchdog.cancel()
    return app.return_code or 0
