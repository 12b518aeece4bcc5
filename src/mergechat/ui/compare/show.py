"""What each runner event changes on screen: the placement line, a column's status, its reply,
its notes, its results; and the line over the prompt."""

from __future__ import annotations

from typing import Any, Protocol

from textual.message import Message

from mergechat.core.compare.events import (
    CompareEvent,
    CompareFinished,
    CompareModelDone,
    CompareNote,
    ComparePhase,
    ComparePlaced,
    CompareSwitched,
    CompareText,
    ModelResult,
)
from mergechat.core.compare.plan import ComparePlan
from mergechat.core.settings.generation import GenerationSettings
from mergechat.ui.compare.board import CompareBoard


class AskStarted(Message):
    """The worker starts asking ``prompt`` (every earlier event has been shown)."""

    def __init__(self, prompt: str) -> None:
        super().__init__()
        self.prompt = prompt


class Notice(Message):
    """A notice from the worker thread (the history could not be written...)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class ShowHost(Protocol):
    """What the events change on the compare app (a protocol: no import of the app)."""

    plan: ComparePlan

    @property
    def board(self) -> CompareBoard: ...
    def show_placement(self, reason: str) -> None: ...
    def finished(self, results: tuple[ModelResult, ...], wall_s: float, stopped: bool) -> None: ...
    def notify(self, message: str, *, title: str = "", **kwargs: Any) -> None: ...


def info_line(settings: GenerationSettings, same_precision: bool, wall_s: float | None) -> str:
    """``Same precision for all: on (F8) · greedy · up to 512 tokens · answered in 3.1 s``."""
    temperature = settings.temperature
    decoding = "greedy" if not temperature else f"temperature {temperature:g}"
    parts = [
        f"Same precision for all: {'on' if same_precision else 'off'} (F8)",
        decoding,
        f"up to {settings.max_new_tokens} tokens",
    ]
    if wall_s is not None:
        parts.append(f"all answered in {wall_s:.1f} s")
    return " · ".join(parts)


def _role(plan: ComparePlan, index: int) -> str:
    if index == plan.reference:
        return "reference"
    return "base" if index == plan.base else ""


def show_event(host: ShowHost, event: CompareEvent) -> None:
    """Put ``event`` on screen."""
    board = host.board
    if isinstance(event, ComparePlaced):
        host.show_placement(event.placement.reason)
        for column in board.columns:  # every detection has ended: the loads come in turn
            if column.info.phase == "detecting":
                column.set_info(phase="waiting", detail="")
    elif isinstance(event, ComparePhase):
        changes: dict[str, Any] = {
            "phase": event.phase,
            "detail": event.detail,
            "fraction": event.fraction,
        }
        if event.state is not None:  # loaded: the device and precision read from the model
            changes.update(device=event.state.device, dtype=event.state.dtype)
        board.column(event.index).set_info(**changes)
    elif isinstance(event, CompareText):
        board.column(event.index).append(event.delta)
    elif isinstance(event, CompareNote):
        board.column(event.index).add_note(event.message)
    elif isinstance(event, CompareSwitched):
        column = board.column(event.index)
        if event.state is not None:
            column.set_info(device=event.state.device, dtype=event.state.dtype)
        if event.error:
            title = f"{column.model.label}: precision"
            host.notify(event.error, title=title, severity="warning", timeout=10)
    elif isinstance(event, CompareModelDone):
        plan, result = host.plan, event.result
        reference = plan.models[plan.reference].name
        board.column(result.index).finish(
            result, reference=reference, role=_role(plan, result.index)
        )
    elif isinstance(event, CompareFinished):
        host.finished(event.results, event.wall_s, event.stopped)
