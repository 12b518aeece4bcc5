"""`ChatRecorder`: the recorder app and one-shot share, with history on, off, failing, and
interrupted by SIGHUP."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mergechat.core.api import ChatMessage, ReplyStats
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.recorder import ChatRecorder
from mergechat.core.store.records import HistoryUnavailable
from mergechat.core.store.store import HistoryStore

STATS = ReplyStats(5, 3, 0.2, 0.6, 10.0, 8, 512, "float32", "cpu")
SETTINGS = GenerationSettings(temperature=0.0, max_new_tokens=3)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    s = HistoryStore.open(tmp_path / "h.sqlite3")
    yield s
    s.close()


def _only_conversation(store: HistoryStore) -> list[tuple[str, str, str]]:
    (summary,) = store.list_conversations()
    return [(m.role, m.text, m.state) for m in store.get_conversation(summary.id).messages]


def test_history_off_does_nothing() -> None:
    history = ChatRecorder(None)
    history.start("/m")
    history.user_message("hi")
    handle = history.reply_started()
    assert handle is None and not history.enabled
    history.reply_progress(handle, "x")
    history.reply_finished(handle, "x", "complete", STATS, SETTINGS, "/m")
    history.reply_failed(handle, "", "boom")
    history.drop_last_reply()
    history.flush()
    assert history.resume(1) == [] and history.resume_last("/m") == []
    history.close()


def test_a_chat_is_saved_as_it_happens(store: HistoryStore, tmp_path: Path) -> None:
    history = ChatRecorder(store, interval_s=0.0)
    history.start(tmp_path / "model")
    assert store.list_conversations() == []  # created with its first message, not before
    history.user_message("first question")
    assert _only_conversation(store) == [("user", "first question", "complete")]
    handle = history.reply_started()
    assert _only_conversation(store)[1] == ("assistant", "", "streaming")
    history.reply_progress(handle, "An ans")
    assert _only_conversation(store)[1] == ("assistant", "An ans", "streaming")
    history.reply_finished(handle, "An answer", "length", STATS, SETTINGS, tmp_path / "model")
    reply = store.get_conversation(history.conversation_id or 0).messages[1]
    assert (reply.text, reply.state, reply.finish_reason) == ("An answer", "complete", "length")
    assert (reply.dtype, reply.device, reply.new_tokens) == ("float32", "cpu", 3)
    assert reply.generation_settings() == SETTINGS

    history.user_message("second")
    failed = history.reply_started()
    history.reply_failed(failed, "half", "out of memory")
    last = store.get_conversation(history.conversation_id or 0).messages[-1]
    assert (last.text, last.state, last.error) == ("half", "failed", "out of memory")


def test_progress_is_throttled(store: HistoryStore) -> None:
    history = ChatRecorder(store, interval_s=60.0)
    history.start("/m")
    history.user_message("q")
    handle = history.reply_started()
    history.reply_progress(handle, "not yet saved")
    assert _only_conversation(store)[1] == ("assistant", "", "streaming")
    history.flush(interrupted=False)
    assert _only_conversation(store)[1] == ("assistant", "not yet saved", "streaming")
    history.reply_progress(handle, "more text")
    history.flush()  # quitting: the reply is kept as stopped
    assert _only_conversation(store)[1] == ("assistant", "more text", "stopped")


def test_resume_regenerate_and_continue(store: HistoryStore) -> None:
    history = ChatRecorder(store, interval_s=0.0)
    history.start("/m")
    history.user_message("q1")
    history.reply_failed(history.reply_started(), "oops", "engine error")
    history.reply_finished(history.reply_started("regenerate"), "a1", "complete", STATS, SETTINGS)
    history.user_message("q2")
    history.reply_finished(history.reply_started(), "a2 cut", "length", STATS, SETTINGS)
    conv_id = history.conversation_id
    # The failed reply was replaced by its regeneration.
    assert [t for _, t, _ in _only_conversation(store)] == ["q1", "a1", "q2", "a2 cut"]

    again = ChatRecorder(store, interval_s=0.0)
    assert again.resume_last("/other") == []
    assert again.resume_last("/m") == [
        ChatMessage("user", "q1"),
        ChatMessage("assistant", "a1"),
        ChatMessage("user", "q2"),
        ChatMessage("assistant", "a2 cut"),
    ]
    assert again.conversation_id == conv_id and again.conversation is not None
    # Continue: the same row grows by what this request generates.
    handle = again.reply_started("continue")
    again.reply_progress(handle, " and more")
    assert _only_conversation(store)[-1] == ("assistant", "a2 cut and more", "streaming")
    again.reply_finished(handle, " and more.", "complete", STATS, SETTINGS)
    assert _only_conversation(store)[-1] == ("assistant", "a2 cut and more.", "complete")
    # A failed continuation leaves the reply as it was.
    handle = again.reply_started("continue")
    again.reply_progress(handle, " broken")
    again.reply_failed(handle, " broken", "device lost")
    assert _only_conversation(store)[-1] == ("assistant", "a2 cut and more.", "complete")
    # Regenerate: the old reply goes, the new one takes its place.
    again.reply_finished(again.reply_started("regenerate"), "a2 new", "complete", STATS, SETTINGS)
    assert [t for _, t, _ in _only_conversation(store)] == ["q1", "a1", "q2", "a2 new"]
    # Regenerating right after a user message deletes nothing.
    again.user_message("q3")
    again.reply_finished(again.reply_started("regenerate"), "a3", "stopped", STATS, SETTINGS)
    assert [t for _, t, _ in _only_conversation(store)][-3:] == ["a2 new", "q3", "a3"]


def test_failed_replies_are_not_context_when_resuming(store: HistoryStore) -> None:
    history = ChatRecorder(store)
    history.start("/m")
    history.user_message("q1")
    history.reply_failed(history.reply_started(), "partial", "out of memory")
    assert ChatRecorder(store).resume(history.conversation_id or 0) == [ChatMessage("user", "q1")]


def test_deleted_conversation_continues_in_a_new_one(store: HistoryStore) -> None:
    history = ChatRecorder(store)
    history.start("/m")
    history.user_message("q1")
    old = history.conversation_id
    store.delete(old or 0)
    history.user_message("q2")
    assert history.conversation_id not in (None, old)
    assert _only_conversation(store) == [("user", "q2", "complete")]
    assert history.resume(old or 0) == []


def test_first_failure_turns_history_off_with_one_notice(store: HistoryStore) -> None:
    turned_off: list[HistoryUnavailable] = []
    history = ChatRecorder(store, turned_off.append)
    history.start("/m")
    history.user_message("saved")
    store.close()  # e.g. the disk went away
    history.user_message("not saved")
    assert not history.enabled
    assert len(turned_off) == 1 and "closed" in str(turned_off[0])
    assert history.reply_started() is None
    history.user_message("still fine")
    assert len(turned_off) == 1


_SSH_SESSION = r"""
import signal, sys, time
from mergechat.core.store.recorder import ChatRecorder
from mergechat.core.store.store import HistoryStore

history = ChatRecorder(HistoryStore.open(sys.argv[1]), interval_s=1.0)
history.start("/models/tiny")
history.user_message("hello over ssh")
handle = history.reply_started()

def hang_up(signum, frame):
    history.flush()
    sys.exit(129)

signal.signal(signal.SIGHUP, hang_up)
text, i = "", 0
while True:
    text += f"w{i} "
    history.reply_progress(handle, text)
    print(i, flush=True)
    i += 1
    time.sleep(0.005)
"""


def test_sighup_mid_reply_keeps_the_message_and_the_whole_partial_reply(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", _SSH_SESSION, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    started = None
    for line in child.stdout:
        started = started or time.monotonic()
        if time.monotonic() - started > 0.5 and int(line) > 20:
            break
    child.send_signal(signal.SIGHUP)
    rest, _ = child.communicate(timeout=30)
    assert child.returncode == 129
    printed = int(rest.split()[-1]) if rest.split() else int(line)
    with HistoryStore.open(path) as s:
        (summary,) = s.list_conversations()
        user, reply = s.get_conversation(summary.id).messages
    assert (user.text, user.state) == ("hello over ssh", "complete")
    assert reply.state == "stopped"
    words = reply.text.split()
    assert reply.text == "".join(f"w{i} " for i in range(len(words)))
    # Everything generated was flushed (the signal may land between update and print).
    assert len(words) - 1 in (printed, printed + 1)
