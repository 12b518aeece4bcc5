"""One-shot mode: load a model on the engine thread, stream one reply to stdout (or JSON), exit.

The main thread never runs torch: it only waits on the engine's events and decodes the token-id
stream in batches (about every 50 ms), so generation on the engine thread keeps its full speed.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TextIO

from mergechat.cli.oneshot_history import OneShotHistory
from mergechat.cli.oneshot_session import JSON_KEYS as JSON_KEYS
from mergechat.cli.oneshot_session import EngineFactory, OneShotSession
from mergechat.cli.oneshot_session import OneShotRequest as OneShotRequest
from mergechat.cli.output import warn as warn
from mergechat.core.api import EngineClient, EventSink
from mergechat.core.termination import Terminated, terminate_on_signals

EXIT_INTERRUPTED = 130


def _default_engine(sink: EventSink) -> EngineClient:
    from mergechat.core.engine.engine import Engine

    return Engine(sink)


def run_oneshot(
    request: OneShotRequest,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    engine_factory: EngineFactory | None = None,
) -> int:
    """Answer one prompt; return the exit code (0; 130 after Ctrl+C; 128 + N after signal N).

    The exchange is saved in the history unless ``request.record_history`` is false; SIGHUP and
    SIGTERM save the reply so far before exiting. Raises `MergechatError` when the model fails to
    load or the reply fails.
    """
    err = err or sys.stderr
    history = OneShotHistory.open(request.record_history, err)
    session = OneShotSession(
        request, engine_factory or _default_engine, out or sys.stdout, err, history
    )
    # A load cannot be cancelled: after Ctrl+C, do not wait for it (the thread is a daemon).
    shutdown_timeout = 5.0
    try:
        with terminate_on_signals(session.interrupted_by_signal):
            try:
                session.load()
            except KeyboardInterrupt:
                session.clear_progress()
                shutdown_timeout = 0.2
                return EXIT_INTERRUPTED
            finished, interrupted = session.generate()
            session.print_result(finished)
            return EXIT_INTERRUPTED if interrupted else 0
    except Terminated as exc:
        session.clear_progress()
        with contextlib.suppress(OSError):  # after a hang-up the terminal may be gone
            session.end_line()  # the shell prompt must not land on the reply's last line
        shutdown_timeout = 0.2
        return 128 + exc.signum
    finally:
        history.close()
        session.engine.shutdown(timeout=shutdown_timeout)
