"""`PrecisionSwitcher`: a switch asked for while a reply streams waits for it instead of failing.

The one queued switch lives in the `Session` (not in widgets); the status bar and the precision
menu show it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from mergechat.core.api import EngineClient
from mergechat.core.dtypes import DType
from mergechat.ui.conversation import Conversation
from mergechat.ui.session import Phase, Session
from mergechat.ui.verdicts import precision_verdicts

if TYPE_CHECKING:
    from mergechat.ui.screens.precision import PrecisionScreen


class SwitchChat(Protocol):
    """What the switcher uses of the chat screen."""

    @property
    def conversation(self) -> Conversation: ...
    def set_phase(self, phase: Phase, **changes: Any) -> None: ...
    def show_queued(self, dtype: str | None) -> None: ...


class SwitchHost(Protocol):
    """What the switcher uses of the app (a protocol: importing the app would be a cycle)."""

    @property
    def chat(self) -> SwitchChat: ...
    @property
    def session(self) -> Session: ...
    @property
    def engine(self) -> EngineClient: ...
    def notify(self, message: str, *, title: str = "", **kwargs: Any) -> None: ...
    def call_later(self, callback: Callable[[], object], *args: Any, **kwargs: Any) -> bool: ...


NO_MODEL = "No model is loaded: press F2 to choose one."


class PrecisionSwitcher:
    """Switches now when the chat is ready, or queues one switch behind the streaming reply.

    The queued switch runs once the reply ends (finished, stopped or failed); a second choice
    replaces it, Escape in the precision menu cancels it, and a model load drops it.
    """

    def __init__(self, app: SwitchHost) -> None:
        self.app = app
        self.session = app.session
        # Every way a reply ends goes through the conversation, also events held while its
        # widgets were mounting and a reply dropped by a new chat.
        app.chat.conversation.on_reply_end = self._reply_ended

    @property
    def queued(self) -> DType | None:
        """The precision to switch to when the streaming reply ends (None: nothing queued)."""
        return self.session.queued_dtype

    def streaming(self) -> bool:
        """True while a reply is asked for or streaming: a switch now waits for it."""
        return self.app.chat.conversation.busy or self.session.phase == "generating"

    def request(self, dtype: DType) -> None:
        """Switch the loaded model to ``dtype`` now, or after the reply that is streaming."""
        app, phase, state = self.app, self.session.phase, self.session.model_state
        if state is None:
            app.notify(NO_MODEL, severity="warning")
        elif self.streaming():
            self._queue(dtype, state.dtype)
        elif phase != "ready":
            app.notify(f"Cannot switch while {phase}.", severity="warning")
        elif dtype == state.dtype:
            app.notify(f"The weights are already {dtype}.")
        else:
            app.chat.set_phase("switching")
            app.engine.switch_dtype(dtype)

    def menu(self) -> tuple[PrecisionScreen, Callable[[DType | None], None]] | None:
        """The precision menu and what to do with its answer (None, said why: no model).

        During a reply a choice waits for it; when one already waits, Escape cancels it.
        """
        from mergechat.ui.screens.precision import PrecisionScreen

        app, state = self.app, self.session.model_state
        if state is None:
            app.notify(NO_MODEL, severity="warning")
            return None
        verdicts = precision_verdicts(self.session.capabilities, state.device_id, state)
        screen = PrecisionScreen(
            state.dtype, verdicts, queued=self.queued, after_reply=self.streaming()
        )
        return screen, partial(self._chosen, self.queued)

    def cancel(self) -> None:
        """Forget the queued switch and say so (the weights keep their precision)."""
        dtype, state = self.queued, self.session.model_state
        if dtype is None:
            return
        self._set(None)
        stay = f": the weights stay {state.dtype}" if state is not None else ""
        self.app.notify(f"The switch to {dtype} after this reply is cancelled{stay}.")

    def drop(self, why: str) -> None:
        """Forget the queued switch because it can no longer run; the notice says ``why``."""
        dtype = self.queued
        if dtype is None:
            return
        self._set(None)
        self.app.notify(
            f"The switch to {dtype} is dropped: {why}.", title="Precision", severity="warning"
        )

    def _chosen(self, queued_at_open: DType | None, dtype: DType | None) -> None:
        if dtype is not None:
            self.request(dtype)
        elif queued_at_open is not None and self.queued == queued_at_open:
            self.cancel()  # Escape in a menu that showed the queued switch

    def _queue(self, dtype: DType, current: DType) -> None:
        previous = self.queued
        if dtype == previous:
            self.app.notify(f"The switch to {dtype} is already queued for after this reply.")
        elif dtype == current:
            if previous is None:
                self.app.notify(f"The weights are already {dtype}.")
            else:
                self.cancel()  # back to what runs now: nothing to switch
        else:
            self._set(dtype)
            instead = f" (instead of {previous})" if previous is not None else ""
            self.app.notify(f"Switching to {dtype} after this reply{instead}.")

    def _set(self, dtype: DType | None) -> None:
        self.session.queued_dtype = dtype
        self.app.chat.show_queued(dtype)

    def _reply_ended(self) -> None:
        if self.queued is not None:
            # After the chat has finished with the reply's event (its phase is "ready" then).
            self.app.call_later(self._run_queued)

    def _run_queued(self) -> None:
        dtype = self.queued
        if dtype is None or self.streaming():
            return  # cancelled meanwhile, or a new reply started: it runs after that one
        if self.session.model_state is None:
            self.drop("the reply's failure left no model loaded")
            return
        self._set(None)
        self.request(dtype)
