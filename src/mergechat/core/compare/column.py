"""One compared model's client and live state, updated from its engine events."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mergechat.core.api import (
    AgreementScored,
    CapabilitiesReady,
    EngineClient,
    EngineCrashed,
    EngineEvent,
    EngineNotice,
    FinishReason,
    LoadFailed,
    LoadProgress,
    ModelLoaded,
    ModelState,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    ReplyStats,
    SwitchFailed,
    SwitchFinished,
    SwitchStarted,
)
from mergechat.core.compare.events import (
    CompareEvent,
    CompareNote,
    ComparePhase,
    CompareSwitched,
    CompareText,
    ModelResult,
)
from mergechat.core.compare.plan import CompareModel
from mergechat.core.detect.capabilities import Assessment, Capabilities
from mergechat.core.streaming import ReplyStream


@dataclass
class Column:
    """Mutable state of one model during a comparison (runner thread only)."""

    index: int
    model: CompareModel
    client: EngineClient | None = None
    #: What the column waits for: ``detect``, ``load``, ``reply``, ``score``, ``switch``
    #: (None: idle).
    busy: str | None = None
    request_id: int | None = None
    caps: Capabilities | None = None
    assessment: Assessment | None = None
    state: ModelState | None = None
    load_started: float = 0.0
    load_s: float | None = None
    unload_s: float | None = None
    stream: ReplyStream | None = None
    reply: str = ""
    stats: ReplyStats | None = None
    finish: FinishReason | None = None
    error: str | None = None
    reply_error: str | None = None
    agreement: float | None = None
    agreement_note: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """False once the model failed to inspect or load: it is skipped from then on."""
        return self.error is None and self.model.error is None

    def cannot_switch(self) -> str | None:
        """Why this model's precision cannot be switched (None: it can)."""
        name = self.model.name
        if self.model.remote:
            return f"{name} is served: its precision is the server's, not switchable here"
        if not self.usable:
            return f"{name} cannot be compared: {self.model.error or self.error}"
        return None

    def begin(self, what: str, request_id: int | None = None) -> None:
        """Mark the column as waiting for ``what`` (its answer event clears it)."""
        self.busy, self.request_id = what, request_id
        if what == "load":
            self.load_started, self.load_s = time.perf_counter(), None
        if what == "reply":
            self._clear_reply()

    def new_prompt(self, *, keep_load: bool) -> None:
        """Forget the previous prompt's answer and scores, so a model a stop skips does not
        show them as this prompt's (``keep_load``: its load time still counts)."""
        self._clear_reply()
        self.agreement, self.agreement_note, self.unload_s = None, None, None
        self.load_s = self.load_s if keep_load else None

    def skip(self) -> None:
        """A stop came before this model answered: its result says stopped, with no reply."""
        self._clear_reply()
        self.finish = "stopped"

    def _clear_reply(self) -> None:
        self.stream, self.reply, self.stats, self.finish, self.reply_error = (
            None,
            "",
            None,
            None,
            None,
        )

    def drain(self) -> CompareText | None:
        """New reply text since the last drain, as an event (None when there is none)."""
        if self.stream is None:
            return None
        delta = self.stream.drain()
        self.reply += delta
        return CompareText(self.index, delta) if delta else None

    def apply(self, event: EngineEvent) -> list[CompareEvent]:
        """Update from one engine event; return what to tell the view."""
        out: list[CompareEvent] = []
        if isinstance(event, EngineNotice):
            if self.busy == "detect" and event.level == "error":
                self.error, self.busy = event.message, None
                out.append(ComparePhase(self.index, "failed", event.message))
            else:
                self.notes.append(event.message)
                out.append(CompareNote(self.index, event.message))
        elif isinstance(event, CapabilitiesReady) and self.busy == "detect":
            self.caps, self.assessment = event.capabilities, event.assessment
            if event.assessment is not None:  # else its error notice follows
                self.busy = None
        elif isinstance(event, LoadProgress):
            out.append(ComparePhase(self.index, "loading", event.stage, event.fraction))
        elif isinstance(event, ModelLoaded):
            self.state, self.busy = event.state, None
            self.load_s = time.perf_counter() - self.load_started
            self.notes += event.warnings
            out += [CompareNote(self.index, w) for w in event.warnings]
            out.append(ComparePhase(self.index, "loaded", state=event.state))
        elif isinstance(event, LoadFailed):
            self.error, self.busy = event.message, None
            out.append(ComparePhase(self.index, "failed", event.message))
        elif isinstance(event, EngineCrashed):
            self.error, self.busy, self.state = event.message, None, None
            out.append(ComparePhase(self.index, "failed", event.message))
        elif isinstance(event, SwitchStarted | SwitchFinished | SwitchFailed):
            out += self._switch_event(event)
        elif getattr(event, "request_id", None) == self.request_id and self.busy is not None:
            out += self._reply_event(event)
        return out

    def _switch_event(
        self, event: SwitchStarted | SwitchFinished | SwitchFailed
    ) -> list[CompareEvent]:
        if isinstance(event, SwitchStarted):
            detail = f"{event.source} to {event.target} ({event.method})"
            return [ComparePhase(self.index, "switching", detail)]
        if self.busy == "switch":
            self.busy = None
        self.state = event.state
        error = event.message if isinstance(event, SwitchFailed) else None
        if self.state is None:  # the switch failed and the model could not be kept
            self.error = error or "the model was unloaded"
            return [
                CompareSwitched(self.index, None, self.error),
                ComparePhase(self.index, "failed", self.error),
            ]
        return [
            CompareSwitched(self.index, self.state, error),
            ComparePhase(self.index, "loaded", state=self.state),
        ]

    def _reply_event(self, event: EngineEvent) -> list[CompareEvent]:
        if isinstance(event, ReplyStarted):
            self.stream = event.stream
            return [ComparePhase(self.index, "answering")]
        if isinstance(event, ReplyFinished):
            text = self.drain()
            if event.text.startswith(self.reply):
                extra = event.text[len(self.reply) :]
                text = CompareText(self.index, (text.delta if text else "") + extra)
            self.reply, self.stats, self.finish, self.busy = (
                event.text,
                event.stats,
                event.finish,
                None,
            )
            return [text] if text and text.delta else []
        if isinstance(event, ReplyFailed):
            self.reply = event.partial_text or self.reply
            self.reply_error, self.busy = event.message, None
            return [ComparePhase(self.index, "failed", event.message)]
        if isinstance(event, AgreementScored):
            self.agreement, self.agreement_note, self.busy = event.score, event.message, None
        return []

    def result(self) -> ModelResult:
        """The model's result so far."""
        return ModelResult(
            index=self.index,
            model=self.model,
            state=self.state,
            reply=self.reply,
            stats=self.stats,
            finish=self.finish,
            error=self.model.error or self.error or self.reply_error,
            load_s=self.load_s,
            unload_s=self.unload_s,
            agreement=self.agreement,
            agreement_note=self.agreement_note,
            notes=(*self.model.notes, *self.notes),
        )
