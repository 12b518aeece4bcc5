"""One-shot mode saves its exchange in the history; history trouble is one warning, never fatal."""

from __future__ import annotations

import io
import os
import signal
import threading
from pathlib import Path

import pytest

from fixtures.fake_engine import FakeEngine
from mergechat.cli.oneshot import EXIT_INTERRUPTED, OneShotRequest, run_oneshot
from mergechat.cli.oneshot_history import OneShotHistory
from mergechat.core.api import EventSink, LoadRequest, ReplyFinished
from mergechat.core.errors import MergechatError
from mergechat.core.model.target import model_key
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.records import Conversation
from mergechat.core.store.store import HistoryStore, default_path
from test_oneshot import REPLY, _script

SETTINGS = GenerationSettings(temperature=0.0, max_new_tokens=64)


def run(model: Path, *, record: bool = True, **changes: object) -> tuple[int, str, str, FakeEngine]:
    """One-shot with the fake engine scripted by ``changes`` (fields of its `Script`)."""
    engines: list[FakeEngine] = []

    def factory(sink: EventSink) -> FakeEngine:
        engines.append(FakeEngine(sink, _script(**changes)))
        return engines[0]

    out, err = io.StringIO(), io.StringIO()
    request = OneShotRequest(LoadRequest(model), "Hi there", SETTINGS, record_history=record)
    code = run_oneshot(request, out=out, err=err, engine_factory=factory)
    # The fake engine's "probes read from cache" note is not what these tests are about.
    warnings = [line for line in err.getvalue().splitlines() if "note:" not in line]
    return code, out.getvalue(), "\n".join(warnings), engines[0]


def saved() -> list[Conversation]:
    with HistoryStore.open() as store:
        return [store.get_conversation(s.id) for s in store.list_conversations()]


def test_the_exchange_is_saved_with_its_stats_and_settings(tmp_path: Path) -> None:
    code, out, err, engine = run(tmp_path, token_delay=0.001)
    assert (code, err) == (0, "")
    stats = next(e.stats for e in engine.events if isinstance(e, ReplyFinished))
    [conv] = saved()
    assert conv.model_path == model_key(tmp_path) and conv.title == "Hi there"
    user, reply = conv.messages
    assert (user.role, user.text, user.state) == ("user", "Hi there", "complete")
    assert (reply.text, reply.state, reply.finish_reason) == (
        out.rstrip("\n"),
        "complete",
        "complete",
    )
    assert (reply.device, reply.dtype, reply.tokens_per_s, reply.prompt_tokens) == (
        "cpu",
        "bfloat16",
        stats.decode_tokens_per_s,
        stats.prompt_tokens,
    )
    assert reply.generation_settings() == SETTINGS


def test_the_prompt_is_committed_before_the_engine_is_asked(tmp_path: Path) -> None:
    seen: list[list[str]] = []
    original = FakeEngine.generate

    def generate(self: FakeEngine, *args: object, **kwargs: object) -> int:
        seen.append([m.text for c in saved() for m in c.messages])
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    FakeEngine.generate = generate  # type: ignore[method-assign]
    try:
        run(tmp_path)
    finally:
        FakeEngine.generate = original  # type: ignore[method-assign]
    assert seen == [["Hi there", ""]]


def test_a_failed_reply_is_saved_as_failed(tmp_path: Path) -> None:
    with pytest.raises(MergechatError, match="CUDA out of memory"):  # it still reaches the user
        run(tmp_path, reply_error="CUDA out of memory", reply_error_at=5)
    reply = saved()[0].messages[1]
    assert (reply.state, reply.error, reply.text) == ("failed", "CUDA out of memory", REPLY[:5])


def test_ctrl_c_saves_the_partial_reply_as_stopped(tmp_path: Path) -> None:
    code, out, _, _ = run(tmp_path, interrupt_drain=True, token_delay=0.01)
    assert code == EXIT_INTERRUPTED
    reply = saved()[0].messages[1]
    assert reply.state == "stopped" and reply.text == out.rstrip("\n")


def test_no_history_writes_nothing(tmp_path: Path) -> None:
    code, out, err, _ = run(tmp_path, record=False)
    assert (code, err) == (0, "") and out
    assert not default_path().exists()


def test_a_corrupt_database_is_one_warning_and_the_answer_still_comes(tmp_path: Path) -> None:
    path = default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"garbage" * 500)
    code, out, err, _ = run(tmp_path)
    assert code == 0 and out == REPLY + "\n"
    lines = err.splitlines()  # the only warning
    assert len(lines) == 1 and lines[0].startswith("mergechat: warning: history is off: ")
    assert "damaged" in lines[0]


def test_a_write_failing_mid_reply_turns_history_off_with_one_warning(tmp_path: Path) -> None:
    err = io.StringIO()
    history = OneShotHistory.open(True, err)
    store = history.recorder.store
    assert store is not None
    history.begin(tmp_path, "question")
    store.close()  # the database goes away under it
    history.progress("partial")
    history.interrupted("partial")
    history.close()
    assert err.getvalue().count("mergechat: warning: history is off:") == 1


def test_sigterm_saves_the_partial_reply_and_exits_143(tmp_path: Path) -> None:
    printed = threading.Event()

    def kill_when_printed() -> None:
        # Only once reply text is out (the handler is installed by then): a SIGTERM without
        # one-shot's handler would end pytest itself.
        if printed.wait(10):
            os.kill(os.getpid(), signal.SIGTERM)

    class Terminal(io.StringIO):
        def write(self, text: str) -> int:
            written = super().write(text)
            if text.strip():
                printed.set()
            return written

    killer = threading.Thread(target=kill_when_printed)
    killer.start()
    out, err = Terminal(), io.StringIO()
    request = OneShotRequest(LoadRequest(tmp_path), "Hi there", SETTINGS)
    code = run_oneshot(
        request,
        out=out,
        err=err,
        engine_factory=lambda sink: FakeEngine(sink, _script(reply="x" * 400, token_delay=0.01)),
    )
    killer.join()
    assert printed.is_set()
    assert code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored
    reply = saved()[0].messages[1]
    assert reply.state == "stopped"
    # Saved as far as it was printed; the line is ended so the shell prompt starts on its own.
    assert out.getvalue() == reply.text + "\n" and 0 < len(reply.text) < 400
