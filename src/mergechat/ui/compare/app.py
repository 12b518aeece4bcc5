"""`CompareApp`: one prompt box, one column per model, each streaming its own reply.

The blocking `CompareRunner` runs on one thread worker (`RunnerJobs`); its events come back as
messages and `show_event` puts them in the columns. No torch import here: engines are made by
the runner's factory on the worker thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("TEXTUAL_FPS", "120")  # as the chat app: keys wait less while text streams

from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.content import Content
from textual.widgets import Static

from mergechat.core.compare.clients import default_factory
from mergechat.core.compare.events import ModelResult
from mergechat.core.compare.history import record_comparison
from mergechat.core.compare.runner import CompareRunner
from mergechat.core.dtypes import DType
from mergechat.core.settings.config import load_config
from mergechat.core.store.records import HistoryUnavailable
from mergechat.core.visible import escape_control
from mergechat.ui.bindings import prompt_placeholder
from mergechat.ui.compare.board import CompareBoard
from mergechat.ui.compare.jobs import CompareEventMessage, JobDone, RunnerJobs
from mergechat.ui.compare.keys import COMPARE_BINDINGS
from mergechat.ui.compare.options import CompareOptions
from mergechat.ui.compare.palette import CompareCommands, compare_help_rows
from mergechat.ui.compare.precision import precision_menu
from mergechat.ui.compare.show import AskStarted, Notice, info_line, show_event
from mergechat.ui.notices import show_settings_problems
from mergechat.ui.themes import register_themes, resolve_theme_name
from mergechat.ui.widgets.key_footer import KeyFooter
from mergechat.ui.widgets.prompt_input import PromptInput

PLACING = "Placement: asking the detector how much memory each model needs…"


class CompareApp(App[int]):
    """The compare view; ``config_path`` None: the user's config file (theme, keymap)."""

    CSS_PATH = Path(__file__).parent / "compare.tcss"
    TITLE = "mergechat compare"
    BINDINGS: ClassVar[list[BindingType]] = list(COMPARE_BINDINGS)
    COMMANDS: ClassVar[set[Any]] = {CompareCommands}

    def __init__(self, options: CompareOptions, *, config_path: Path | None = None) -> None:
        super().__init__()
        self.options = options
        self.plan = options.plan
        self.config, self.settings_problems = load_config(config_path)
        self.same_precision = options.same_precision
        self.jobs = RunnerJobs(self)
        self.runner: CompareRunner | None = None
        #: The prompt every model answered last (ctrl+r asks it again).
        self.last_prompt: str | None = None
        self.results: tuple[ModelResult, ...] = ()
        self.wall_s: float | None = None
        #: Conversation ids of the comparisons saved in the history, oldest first.
        self.saved: list[int] = []
        # Esc and quit move it on: an ask queued before then is skipped.
        self._epoch = 0
        self._runner_closed = False

    def compose(self) -> ComposeResult:
        yield Static(PLACING, id="placement", markup=False)
        yield CompareBoard(self.plan.models)
        yield Static("", id="compare-info", markup=False)
        placeholder = prompt_placeholder(self.config.keymap).replace("Message", "Prompt for all")
        yield PromptInput(id="prompt", placeholder=placeholder)
        yield KeyFooter()

    @property
    def board(self) -> CompareBoard:
        """The columns."""
        return self.query_one(CompareBoard)

    @property
    def prompt(self) -> PromptInput:
        """The prompt box."""
        return self.query_one(PromptInput)

    def notify(self, message: str, *, title: str = "", **kwargs: Any) -> None:
        """Notices show model and path text as text (control characters escaped)."""
        message, title = escape_control(message, keep_lines=True), escape_control(title)
        super().notify(message, title=title, **kwargs)

    def on_mount(self) -> None:
        problems = register_themes(self)
        theme, problem = resolve_theme_name(self.available_themes, self.config.theme)
        self.theme = theme
        self.set_keymap(self.config.keymap)
        self.settings_problems += [*problems, *([problem] if problem else [])]
        show_settings_problems(self, self.settings_problems)
        self.show_info()
        self.prompt.focus()

    def on_ready(self) -> None:
        self.jobs.start()
        self._prepare()

    # -- runner jobs ------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """A new runner (placement, loads) on the worker; the previous one is closed first."""
        o = self.options
        runner = CompareRunner(
            self.plan,
            o.factory or default_factory,
            same_precision=self.same_precision,
            device=o.device,
            dtype=o.dtype,
            trust_remote_code=o.trust_remote_code,
            on_event=self.jobs.post,
        )
        previous, self.runner = self.runner, runner
        if previous is not None:
            previous.stop()

        def prepare() -> None:
            if previous is not None:
                previous.close()
            if not self._runner_closed:
                runner.prepare()

        self.jobs.submit("prepare", prepare)

    def _ask(self, prompt: str) -> None:
        runner, epoch, settings = self.runner, self._epoch, self.options.settings
        self.last_prompt = prompt

        def ask() -> None:
            if runner is None or epoch != self._epoch or runner is not self.runner:
                return  # stopped (or placed again) before its turn
            self.post_message(AskStarted(prompt))
            results = runner.ask(prompt, settings)
            try:
                conv_id = record_comparison(
                    prompt, settings, results, enabled=self.options.record_history
                )
            except HistoryUnavailable as exc:
                self.post_message(Notice(f"History is off: {exc.message}"))
                return
            if conv_id is not None:
                self.saved.append(conv_id)

        self.jobs.submit("ask", ask)
        self.refresh_bindings()

    def on_compare_event_message(self, message: CompareEventMessage) -> None:
        show_event(self, message.event)

    def on_ask_started(self, message: AskStarted) -> None:
        for column in self.board.columns:
            column.new_prompt()
        self.results, self.wall_s = (), None
        self.show_info()

    def on_notice(self, message: Notice) -> None:
        self.notify(message.text, severity="warning", timeout=10)

    def show_placement(self, reason: str) -> None:
        """How the models are placed (together, or one at a time) and in which precision."""
        self.query_one("#placement", Static).update(f"Placement: {reason}")

    def finished(self, results: tuple[ModelResult, ...], wall_s: float, stopped: bool) -> None:
        """Every model answered (or failed, or was stopped)."""
        self.results, self.wall_s = results, wall_s
        self.show_info()
        if stopped:
            self.notify("Stopped: each reply keeps what it had so far.")

    def on_job_done(self, message: JobDone) -> None:
        self.jobs.done(message.kind)
        placement = self.runner.placement if self.runner is not None else None
        if message.kind == "switch" and placement is not None:
            self.show_placement(placement.reason)  # a switch changes the precision part
        if message.error:
            self.notify(message.error, title=f"{message.kind} failed", severity="error")
        self.refresh_bindings()

    def show_info(self) -> None:
        """The line over the prompt: same precision on/off, decoding, the last answer's time."""
        info = info_line(self.options.settings, self.same_precision, self.wall_s)
        self.query_one("#compare-info", Static).update(Content(info))

    # -- actions ----------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("help", "precision", "widen", "alone", "stop", "regenerate"):
            return self.screen is self.screen_stack[0]
        return True

    def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        message.stop()
        if not message.text.strip():
            return
        if self.jobs.busy("ask"):
            self.notify("The models are still answering: Esc stops them.", severity="warning")
            return
        self.prompt.accept()
        self._ask(message.text)

    def action_stop(self) -> None:
        """Stop every answer now and skip an ask still waiting for its turn."""
        self._epoch += 1
        if self.runner is not None:
            self.runner.stop()

    def action_regenerate(self) -> None:
        """Ask every model the last prompt again (stops the answers running now)."""
        if self.last_prompt is None:
            self.notify("Nothing to regenerate yet: send a prompt first.", severity="warning")
            return
        if self.jobs.busy("ask"):
            self.action_stop()
        self._ask(self.last_prompt)

    def action_widen(self) -> None:
        """Widen the focused column, or give it back its share."""
        self.board.toggle_wide()

    def action_alone(self) -> None:
        """Show the focused column alone, or every column again."""
        self.board.toggle_alone()

    def action_help(self) -> None:
        """Every key (with the user's keymap applied) and the settings problems."""
        from mergechat.ui.screens.help import HelpScreen

        self.push_screen(HelpScreen(compare_help_rows(self.config.keymap), self.settings_problems))

    def action_precision(self) -> None:
        """The precision menu for the focused column's model."""
        column = self.board.column(self.board.current)
        runner, busy = self.runner, self.jobs.busy("ask")
        detection = runner.detection(column.index) if runner is not None else (None, None)
        menu = precision_menu(column, busy=busy, detection=detection)
        if isinstance(menu, str):
            self.notify(menu, title="Precision", severity="warning", timeout=15)
        else:
            self.push_screen(menu, partial(self.switch_precision, column.index))

    def switch_precision(self, index: int, dtype: DType | None) -> None:
        """Put model ``index`` in ``dtype`` (after the answers running now)."""
        runner = self.runner
        if dtype is None or runner is None:
            return
        self.jobs.submit("switch", lambda: runner.switch(index, dtype))
        if self.jobs.busy("ask"):
            label = self.plan.models[index].label
            self.notify(f"{label} switches to {dtype} once the answers are done.")

    def action_all_float32(self) -> None:
        """Every local model to float32 (the reference precision)."""
        runner = self.runner
        if runner is not None:
            self.jobs.submit("switch", lambda: runner.switch_all("float32"))
            self.notify("Every column switches to float32.", title="Precision")

    def action_same_precision(self) -> None:
        """Turn "same precision for all" on or off; the models are placed (and loaded) again."""
        self.same_precision = not self.same_precision
        self._epoch += 1
        state = "on" if self.same_precision else "off"
        fixed = self.options.dtype not in (None, "auto")
        note = f" (--dtype {self.options.dtype} still applies)" if fixed else ""
        self.notify(f"Same precision for all: {state}{note}; placing the models again.")
        self.show_placement(PLACING.removeprefix("Placement: "))
        self._prepare()
        self.show_info()

    async def action_quit(self) -> None:
        """Stop every answer, unload every model (on the worker) and quit."""
        self.close_runner()
        self.exit(0)

    def close_runner(self) -> None:
        """Stop, then close the runner after the job running now; no jobs after that."""
        if self._runner_closed:
            return
        self._runner_closed = True
        self._epoch += 1
        runner = self.runner
        if runner is not None:
            runner.stop()
            self.jobs.submit("close", runner.close)
        self.jobs.finish()

    def on_unmount(self) -> None:
        self.close_runner()


def run_compare_app(options: CompareOptions) -> int:
    """Run the compare view until the user quits; its exit code."""
    app = CompareApp(options)
    app.run()
    return app.return_code or 0
