"""Process-level pieces of a responsive UI: the engine built off the UI thread, GC freezing."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable

from mergechat.core.api import EngineClient, EventSink

#: Builds an engine that reports to the sink; called on a worker thread, after the first frame.
EngineFactory = Callable[[EventSink], EngineClient]


def real_engine(sink: EventSink) -> EngineClient:
    """The torch engine in its own process (`ProcessEngine`), so torch never shares the UI's GIL.

    ``MERGECHAT_ENGINE=thread`` keeps it in a thread of the app's process instead.
    """
    if os.environ.get("MERGECHAT_ENGINE", "process").strip().lower() == "thread":
        from mergechat.core.engine.engine import Engine

        return Engine(sink)
    from mergechat.core.engine.process import ProcessEngine

    return ProcessEngine(sink)


def freeze_long_lived_objects() -> None:
    """Collect garbage once, then move every surviving object out of the collector's reach.

    A full collection walks every tracked object, a visible pause of the UI while a reply
    streams, longer with torch and transformers imported (BENCHMARKS.md). What is alive after
    start-up, after a load and after the first reply (Markdown and Pygments imported) lives
    until exit anyway, so later passes skip it (`gc.freeze`); the
    collection before it keeps garbage, such as a replaced model's, from being frozen too.
    """
    gc.collect()
    gc.freeze()
    gc.enable()  # `mergechat.cli.app_launch` turns it off until the first frame
