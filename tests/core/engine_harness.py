"""Test helpers for the engine: a real `Engine` whose events land in a queue, plus model copies."""

from __future__ import annotations

import json
import queue
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mergechat.core.api import (
    ChatMessage,
    EngineEvent,
    LoadFailed,
    LoadRequest,
    ModelLoaded,
    ReplyFailed,
    ReplyFinished,
    ReplyStarted,
    SwitchFailed,
    SwitchFinished,
)
from mergechat.core.engine.engine import Engine
from mergechat.core.settings.generation import GenerationSettings

E = TypeVar("E", bound=EngineEvent)
TIMEOUT = 120.0


class Harness:
    """An `Engine` started with a queue sink; every event it emits is kept in ``events``."""

    def __init__(self, probe_cache: Path | None = None, *, reuse_cache: bool = True) -> None:
        self.queue: queue.Queue[EngineEvent] = queue.Queue()
        self.events: list[EngineEvent] = []
        self.engine = Engine(self.queue.put, probe_cache=probe_cache, reuse_cache=reuse_cache)
        self.engine.start()

    def next_event(self, timeout: float = TIMEOUT) -> EngineEvent:
        event = self.queue.get(timeout=timeout)
        self.events.append(event)
        return event

    def wait_for(self, *kinds: type[E], timeout: float = TIMEOUT) -> E:
        """The next event of one of ``kinds`` (others are only recorded)."""
        while True:
            event = self.next_event(timeout)
            if isinstance(event, kinds):
                return event

    def load(self, path: Path, **kwargs: Any) -> ModelLoaded:
        self.engine.load(LoadRequest(path, **kwargs))
        event = self.wait_for(ModelLoaded, LoadFailed)
        assert isinstance(event, ModelLoaded), event
        return event

    def reply(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings | None = None,
        *,
        continue_last: bool = False,
    ) -> tuple[ReplyStarted, ReplyFinished]:
        request_id = self.engine.generate(
            messages, settings or GenerationSettings(max_new_tokens=8), continue_last=continue_last
        )
        started = self.wait_for(ReplyStarted, ReplyFailed)
        assert isinstance(started, ReplyStarted), started
        assert started.request_id == request_id
        finished = self.wait_for(ReplyFinished, ReplyFailed)
        assert isinstance(finished, ReplyFinished), finished
        assert finished.request_id == request_id
        return started, finished

    def switch(self, dtype: Any) -> SwitchFinished | SwitchFailed:
        self.engine.switch_dtype(dtype)
        event = self.wait_for(SwitchFinished, SwitchFailed)
        assert isinstance(event, SwitchFinished | SwitchFailed)
        return event

    def close(self) -> None:
        self.engine.shutdown(timeout=30)


def probe_cache(factory: pytest.TempPathFactory) -> Path:
    """One detector cache for every engine test of the session (probes run once)."""
    return factory.getbasetemp() / "engine-probe-cache" / "probes.json"


@contextmanager
def running(
    factory: pytest.TempPathFactory,
    model: Path | None = None,
    *,
    reuse_cache: bool = True,
    **kwargs: Any,
) -> Iterator[Harness]:
    """A started `Harness` (with ``model`` loaded when given), shut down afterwards.

    ``reuse_cache=False``: an engine that prefills every turn in full.
    """
    harness = Harness(probe_cache(factory), reuse_cache=reuse_cache)
    try:
        if model is not None:
            harness.load(model, **kwargs)
        yield harness
    finally:
        harness.close()


@contextmanager
def running_chatty(
    factory: pytest.TempPathFactory, model: Path, **kwargs: Any
) -> Iterator[Harness]:
    """`running` on a copy of ``model`` with min_new_tokens=64 in its generation_config.json, so
    EOS never ends a short reply: replies have a known length."""
    folder = copy_model(model, factory.mktemp("chatty") / "chatty", min_new_tokens=64)
    with running(factory, folder, **kwargs) as harness:
        yield harness


def ask(text: str) -> list[ChatMessage]:
    return [ChatMessage("user", text)]


def copy_model(source: Path, target: Path, **generation_config: Any) -> Path:
    """Copy a model folder, updating its generation_config.json with ``generation_config``."""
    shutil.copytree(source, target)
    if generation_config:
        path = target / "generation_config.json"
        config = json.loads(path.read_text())
        config.update(generation_config)
        path.write_text(json.dumps(config))
    return target
