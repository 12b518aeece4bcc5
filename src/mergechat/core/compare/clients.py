"""The client each compared model gets by default: its own engine process for a local model
(an unload frees its memory for real; torch never runs in the caller's process, the view's UI),
the remote client for a served one. Imports no torch: the engines are imported when made."""

from __future__ import annotations

import os

from mergechat.core.api import EngineClient, EventSink
from mergechat.core.compare.plan import CompareModel

#: Several engine processes share the CPU: idle OpenMP threads sleep instead of spinning, or
#: the waiting engines' spinning slows the one answering (BENCHMARKS.md).
SIDE_BY_SIDE_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def default_factory(model: CompareModel, sink: EventSink) -> EngineClient:
    """A `ClientFactory`: `ProcessEngine` for a local model (``MERGECHAT_ENGINE=thread``: the
    thread `Engine` in this process, as for the app), `RemoteClient` for a server URL."""
    if model.remote:
        from mergechat.core.remote.client import RemoteClient

        return RemoteClient(sink)
    if os.environ.get("MERGECHAT_ENGINE", "process").strip().lower() == "thread":
        from mergechat.core.engine.engine import Engine

        return Engine(sink)
    from mergechat.core.engine.process import ProcessEngine

    return ProcessEngine(sink, env=SIDE_BY_SIDE_ENV)
