"""The SQLite history store: schema migrations, WAL concurrency, crash safety, bad databases."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.history_data import STATS
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store import schema as history_schema
from mergechat.core.store.reply_writer import ReplyWriter
from mergechat.core.store.schema import LATEST_VERSION, MIGRATIONS
from mergechat.core.store.store import (
    HistoryStore,
    HistoryUnavailable,
    UnknownConversation,
    default_path,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    s = HistoryStore.open(tmp_path / "h.sqlite3")
    yield s
    s.close()


def test_default_location_is_private_and_in_wal_mode() -> None:
    with HistoryStore.open() as s:
        assert s.path == default_path()
        assert s.path.parent == Path(os.environ["MERGECHAT_DATA_DIR"])
    assert stat.S_IMODE(s.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(s.path.parent.stat().st_mode) == 0o700
    conn = sqlite3.connect(s.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    conn.close()


def test_round_trip_of_a_conversation(store: HistoryStore, tmp_path: Path) -> None:
    model = tmp_path / "models" / "merged"
    conv = store.new_conversation(model)
    user = store.add_message(conv, "user", "  Why is\nthe sky blue?  ")
    reply = store.add_message(conv, "assistant", "", state="streaming")
    settings = GenerationSettings(temperature=0.7, top_p=0.9, seed=3, system_prompt="Be brief.")
    assert store.update_reply(
        reply,
        "Rayleigh.",
        "complete",
        stats=STATS,
        settings=settings,
        model_path=model,
        finish_reason="length",
    )
    got = store.get_conversation(conv)
    assert got.title == "Why is the sky blue?" and not got.renamed
    assert got.model_path == str(model.resolve())
    assert [m.id for m in got.messages] == [user, reply]
    assert got.messages[0].text == "  Why is\nthe sky blue?  "
    answer = got.messages[1]
    assert (answer.role, answer.text, answer.state) == ("assistant", "Rayleigh.", "complete")
    assert (answer.device, answer.dtype, answer.model_path) == ("cpu", "bfloat16", str(model))
    assert (answer.prompt_tokens, answer.new_tokens, answer.tokens_per_s) == (21, 64, 47.2)
    assert (answer.ttft_s, answer.total_s, answer.context_used, answer.context_max) == (
        0.31,
        2.0,
        85,
        8192,
    )
    assert answer.finish_reason == "length"
    assert answer.generation_settings() == settings
    assert [m.content for m in got.chat_messages()] == ["  Why is\nthe sky blue?  ", "Rayleigh."]


def test_list_is_newest_first_with_counts_titles_and_renames(store: HistoryStore) -> None:
    first = store.new_conversation("/m/a")
    store.add_message(first, "user", "x" * 100)
    second = store.new_conversation("/m/b")
    empty = store.new_conversation("/m/b")
    store.add_message(second, "user", "hello")
    store.add_message(second, "assistant", "hi")
    listed = store.list_conversations()
    assert [s.id for s in listed] == [second, empty, first]
    assert [s.message_count for s in listed] == [2, 0, 1]
    assert listed[1].title == "New conversation"
    assert len(listed[2].title) == 60 and listed[2].title.endswith("…")
    store.rename(first, "  My   chat ")
    assert store.get_conversation(first).title == "My chat"
    assert store.list_conversations()[2].renamed
    store.rename(first, "")  # back to the first message
    assert store.get_conversation(first).title.startswith("xxxx")


def test_last_conversation_for_model_matches_any_spelling(
    store: HistoryStore, tmp_path: Path
) -> None:
    model = tmp_path / "merge"
    assert store.last_conversation_for_model(model) is None
    old = store.new_conversation(model)
    other = store.new_conversation(tmp_path / "other")
    assert store.last_conversation_for_model(tmp_path / "x" / ".." / "merge") == old
    store.add_message(other, "user", "bump")
    newer = store.new_conversation(str(model))
    assert store.last_conversation_for_model(model) == newer


def test_delete_removes_messages_and_unknown_ids_raise(store: HistoryStore) -> None:
    conv = store.new_conversation("/m")
    reply = store.add_message(conv, "assistant", "hi")
    store.delete(conv)
    assert store.list_conversations() == []
    for call in (
        lambda: store.get_conversation(conv),
        lambda: store.delete(conv),
        lambda: store.rename(conv, "t"),
        lambda: store.add_message(conv, "user", "x"),
    ):
        with pytest.raises(UnknownConversation, match=f"no conversation with id {conv}"):
            call()
    # A reply whose conversation was deleted meanwhile: nothing to update, no error.
    assert store.update_reply(reply, "late", "complete") is False
    count = sqlite3.connect(store.path).execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    assert count == 0
    # Ids are never reused, so that late write cannot land in someone else's message.
    newer = store.new_conversation("/m")
    assert newer > conv and store.add_message(newer, "user", "x") > reply
    assert store.update_reply(reply, "late", "complete") is False
    assert store.get_conversation(newer).messages[0].text == "x"


def test_closed_store_raises_history_unavailable(store: HistoryStore) -> None:
    store.close()
    store.close()
    with pytest.raises(HistoryUnavailable):
        store.list_conversations()


def test_a_signal_handler_saving_mid_write_keeps_its_data(store: HistoryStore) -> None:
    conv = store.new_conversation("/m")
    reply = store.add_message(conv, "assistant", "", state="streaming")
    # A SIGHUP handler runs between two statements of a periodic save, saves and exits.
    with pytest.raises(SystemExit), store._write() as conn:
        conn.execute("UPDATE messages SET text = 'periodic' WHERE id = ?", (reply,))
        store.update_reply(reply, "periodic and final", "stopped")
        raise SystemExit(129)
    message = store.get_conversation(conv).messages[0]
    assert (message.text, message.state) == ("periodic and final", "stopped")
    store.add_message(conv, "user", "the store still works")


# -- migrations -----------------------------------------------------------------------------------
def _database_at(path: Path, version: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    history_schema.migrate(conn, target=version)
    return conn


def test_v1_database_migrates_to_latest_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = _database_at(path, 1)
    conn.execute(
        "INSERT INTO conversations (id, title, model_path, created, updated) "
        "VALUES (7, NULL, '/models/old', 100.0, 200.0)"
    )
    conn.execute(
        "INSERT INTO messages (conversation_id, role, text, created, state) VALUES "
        "(7, 'user', 'hello from v1', 150.0, 'complete'), "
        "(7, 'assistant', 'partial', 160.0, 'streaming')"
    )
    conn.close()
    with HistoryStore.open(path) as s:
        got = s.get_conversation(7)
        assert (got.title, got.model_path, got.created, got.updated) == (
            "hello from v1",
            "/models/old",
            100.0,
            200.0,
        )
        old_reply = got.messages[1]
        assert (old_reply.text, old_reply.state, old_reply.dtype, old_reply.params) == (
            "partial",
            "streaming",
            None,
            None,
        )
        # Columns added by later versions work on the migrated file.
        assert s.update_reply(old_reply.id, "done", "complete", stats=STATS, error=None)
        assert s.get_conversation(7).messages[1].context_max == 8192
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    indexes = {r[0] for r in check.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "messages_by_conversation" in indexes
    check.close()


@pytest.mark.parametrize("start", range(LATEST_VERSION + 1))
def test_every_version_reaches_the_same_schema(tmp_path: Path, start: int) -> None:
    _database_at(tmp_path / "a.sqlite3", start).close()
    HistoryStore.open(tmp_path / "a.sqlite3").close()
    HistoryStore.open(tmp_path / "fresh.sqlite3").close()

    def schema(name: str) -> list[tuple[str, str]]:
        conn = sqlite3.connect(tmp_path / name)
        rows = conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
        conn.close()
        return rows

    assert schema("a.sqlite3") == schema("fresh.sqlite3")
    assert LATEST_VERSION == len(MIGRATIONS) >= 2


def test_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    conn = _database_at(path, LATEST_VERSION)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.close()
    with pytest.raises(HistoryUnavailable, match="newer mergechat") as info:
        HistoryStore.open(path)
    assert info.value.hint and "newer" in info.value.hint


# -- bad databases --------------------------------------------------------------------------------
def test_corrupt_file_gives_history_unavailable_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    path.write_bytes(b"this is not a database, just some bytes\n" * 200)
    with pytest.raises(HistoryUnavailable, match="not a database") as info:
        HistoryStore.open(path)
    assert str(path) in info.value.message
    assert info.value.hint and "move it aside" in info.value.hint


def test_unwritable_location_gives_history_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(HistoryUnavailable, match="cannot use the history database"):
        HistoryStore.open(tmp_path / "a-file" / "h.sqlite3")
    (tmp_path / "dir.sqlite3").mkdir()
    with pytest.raises(HistoryUnavailable):
        HistoryStore.open(tmp_path / "dir.sqlite3")


def test_locked_database_at_open_and_at_write(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    # A new file exclusively locked by another program: cannot even set WAL mode.
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    with pytest.raises(HistoryUnavailable, match="locked") as info:
        HistoryStore.open(path, busy_timeout_s=0.2)
    assert time.monotonic() - started < 5
    assert info.value.hint and "lock" in info.value.hint
    holder.execute("ROLLBACK")

    store = HistoryStore.open(path, busy_timeout_s=0.2)
    conv = store.new_conversation("/m")
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    with pytest.raises(HistoryUnavailable, match="locked"):
        store.add_message(conv, "user", "blocked")
    assert store.list_conversations()[0].id == conv  # WAL: reads still work
    holder.execute("ROLLBACK")
    store.add_message(conv, "user", "now it works")
    assert store.get_conversation(conv).messages[0].text == "now it works"
    store.close()
    holder.close()


# -- concurrency ----------------------------------------------------------------------------------
def test_wal_writer_and_reader_in_two_threads(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    HistoryStore.open(path).close()
    errors: list[BaseException] = []
    done = threading.Event()
    seen: list[int] = []

    def writer() -> None:
        try:
            with HistoryStore.open(path) as s:
                conv = s.new_conversation("/m")
                for i in range(60):
                    s.add_message(conv, "user", f"q{i}")
                    reply = s.add_message(conv, "assistant", "", state="streaming")
                    recorder = ReplyWriter(s, reply, interval_s=0.0)
                    for j in range(3):
                        recorder.update(f"a{i}-{j}")
                    recorder.finish(f"a{i}", "complete", stats=STATS)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        try:
            with HistoryStore.open(path) as s:
                while not done.is_set():
                    listed = s.list_conversations()
                    if listed:
                        conv = s.get_conversation(listed[0].id)
                        # A reader never sees a half-written reply row.
                        assert all(
                            m.state != "complete" or m.new_tokens
                            for m in conv.messages
                            if m.role == "assistant"
                        )
                        seen.append(listed[0].message_count)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert seen == sorted(seen)  # counts only grow
    with HistoryStore.open(path) as s:
        assert s.list_conversations()[0].message_count == 120


# -- crash safety ---------------------------------------------------------------------------------
_WRITER = r"""
import signal, sys, time
from mergechat.core.store.reply_writer import ReplyWriter
from mergechat.core.store.store import HistoryStore
store = HistoryStore.open(sys.argv[1])
conv = store.new_conversation("/models/tiny")
store.add_message(conv, "user", "tell me a long story")
reply = store.add_message(conv, "assistant", "", state="streaming")
recorder = ReplyWriter(store, reply, interval_s=float(sys.argv[2]))
text, i = "", 0
while True:
    text += f"t{i} "
    recorder.update(text)
    print(i, time.monotonic(), flush=True)
    i += 1
    time.sleep(0.005)
"""


def _stream_until(path: Path, seconds: float) -> tuple[subprocess.Popen[str], dict[int, float]]:
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), "1.0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    times: dict[int, float] = {}
    for line in child.stdout:
        index, stamp = line.split()
        times[int(index)] = float(stamp)
        if times[int(index)] - times[0] >= seconds:
            break
    return child, times


def _stored_reply(path: Path) -> tuple[str, str, str]:
    with HistoryStore.open(path) as s:
        (conv,) = s.list_conversations()
        user, reply = s.get_conversation(conv.id).messages
    assert (user.role, user.text, user.state) == ("user", "tell me a long story", "complete")
    return reply.text, reply.state, reply.role


def test_sigkill_mid_reply_loses_at_most_about_one_second(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    child, times = _stream_until(path, 2.6)
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate(timeout=30)
    for line in rest.splitlines():  # what it printed before dying
        index, stamp = line.split()
        times[int(index)] = float(stamp)
    assert child.returncode == -signal.SIGKILL

    text, state, role = _stored_reply(path)
    assert (role, state) == ("assistant", "streaming")
    tokens = text.split()
    saved = len(tokens)
    assert saved >= 1
    assert text == "".join(f"t{i} " for i in range(saved))  # an intact prefix
    produced = max(times)
    lost_span = times[produced] - times[saved] if produced >= saved else 0.0
    assert lost_span <= 1.0 + 0.25, (saved, produced, lost_span)


def test_reply_writer_writes_at_most_once_per_interval(store: HistoryStore) -> None:
    now = [100.0]
    conv = store.new_conversation("/m")
    reply = store.add_message(conv, "assistant", "", state="streaming")
    recorder = ReplyWriter(store, reply, interval_s=1.0, clock=lambda: now[0])

    def stored() -> tuple[str, str]:
        message = store.get_conversation(conv).messages[0]
        return message.text, message.state

    writes = []
    for step, text in enumerate(["a", "ab", "abc", "abcd", "abcde"]):
        now[0] = 100.0 + 0.4 * (step + 1)  # 100.4, 100.8, 101.2, 101.6, 102.0
        writes.append(recorder.update(text))
    assert writes == [False, False, True, False, False]
    assert stored() == ("abc", "streaming")
    now[0] = 102.3
    assert recorder.update("abcdef") is True
    assert recorder.flush() is False  # nothing new since
    recorder.update("abcdefg")
    assert recorder.flush() is True and stored() == ("abcdefg", "streaming")
    recorder.finish("abcdefgh", "stopped", stats=STATS, settings=GenerationSettings(top_k=5))
    assert stored() == ("abcdefgh", "stopped")
    assert recorder.update("ignored") is False
    recorder.finish("ignored too", "complete")
    assert stored() == ("abcdefgh", "stopped")
