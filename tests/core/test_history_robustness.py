"""The history survives damage and odd access: corrupt bytes, read-only files, huge ids, two
writers, and remembers which conversation the app had open."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mergechat.cli import main as cli
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.lock import ConversationLocks
from mergechat.core.store.recorder import ChatRecorder
from mergechat.core.store.records import HistoryUnavailable, UnknownConversation
from mergechat.core.store.store import HistoryStore, default_path

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def store() -> Iterator[HistoryStore]:
    with HistoryStore.open() as s:
        yield s


def _conversation(store: HistoryStore, model: str = "/m", text: str = "hello") -> int:
    conv = store.new_conversation(model)
    store.add_message(conv, "user", text)
    store.add_message(conv, "assistant", "a reply")
    return conv


def _corrupt_first_message(conv_id: int) -> None:
    """Replace the first message's text with bytes that are not UTF-8 (a flipped byte)."""
    raw = sqlite3.connect(default_path())
    raw.execute(
        "UPDATE messages SET text = CAST(X'48C3FF6C6C6F' AS TEXT) WHERE id = "
        "(SELECT min(id) FROM messages WHERE conversation_id = ?)",
        (conv_id,),
    )
    raw.execute(
        "UPDATE messages SET params_json = '{not json' WHERE conversation_id = ?", (conv_id,)
    )
    raw.commit()
    raw.close()


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["history", *args])
    out, err = capsys.readouterr()
    return code, out, err


# -- item 5: one damaged byte ---------------------------------------------------------------------
def test_a_corrupt_byte_is_shown_replaced_and_the_conversation_can_be_deleted(
    store: HistoryStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conv = _conversation(store)
    _corrupt_first_message(conv)
    loaded = store.get_conversation(conv)
    assert loaded.messages[0].text == "H\ufffd\ufffdllo" and loaded.messages[1].params is None
    code, out, err = _cli(capsys, "show", str(conv))
    assert (code, err) == (0, "") and "H\ufffd\ufffdllo" in out
    code, out, err = _cli(capsys, "export", str(conv), "-o", str(tmp_path / "x.json"))
    assert (code, err) == (0, "") and (tmp_path / "x.json").exists()
    code, out, err = _cli(capsys, "delete", str(conv), "--yes")
    assert (code, err) == (0, "") and out.startswith(f"deleted conversation {conv}")
    assert store.list_conversations() == []


def test_resuming_a_damaged_conversation_keeps_saving(store: HistoryStore) -> None:
    conv = _conversation(store)
    _corrupt_first_message(conv)
    turned_off: list[HistoryUnavailable] = []
    history = ChatRecorder(store, turned_off.append, interval_s=0.0)
    history.set_model("/m")
    assert [m.content for m in history.resume(conv)] == ["H\ufffd\ufffdllo", "a reply"]
    history.user_message("and now?")
    assert history.enabled and turned_off == []
    assert store.get_conversation(conv).messages[-1].text == "and now?"


# -- item 6: reading without write access ---------------------------------------------------------
def _read_only_history() -> Path:
    """A data dir with a saved conversation that the test's reader may read but not write."""
    data = Path(tempfile.mkdtemp(prefix="mergechat-ro-"))
    with HistoryStore.open(data / "history.sqlite3") as s:
        _conversation(s, text="read me")
    for leftover in data.glob("history.sqlite3-*"):
        leftover.unlink()  # a clean close leaves none; be sure the reader must create them
    os.chmod(data / "history.sqlite3", 0o444)
    os.chmod(data, 0o555)
    return data


def _without_root_overrides() -> None:
    """In the child: drop CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER for good."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_list_and_show_work_on_a_read_only_database() -> None:
    data = _read_only_history()
    env = {
        **os.environ,
        "MERGECHAT_DATA_DIR": str(data),
        "PYTHONPATH": str(SRC),
        "HOME": str(data),
    }
    # Root writes anything: drop the capabilities that let it ignore file modes.
    user = {"preexec_fn": _without_root_overrides} if os.geteuid() == 0 else {}
    try:
        for args in (["list"], ["show", "--last"]):
            done = subprocess.run(
                [sys.executable, "-m", "mergechat", "history", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                cwd=data,
                **user,  # type: ignore[arg-type]
            )
            assert done.returncode == 0, done.stderr
            assert "read me" in done.stdout and done.stderr == ""
    finally:
        os.chmod(data, 0o755)
        shutil.rmtree(data)


def test_read_only_store_reads_an_older_schema_after_upgrading_it(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    with HistoryStore.open(path) as s:
        conv = _conversation(s)
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TABLE app_last_open")
        raw.execute("PRAGMA user_version = 3")
    with HistoryStore.open_read_only(path) as reader:
        assert reader.get_conversation(conv).messages[0].text == "hello"
        assert reader.last_opened_in_app("/m") == (False, None)


# -- item 10: ids SQLite cannot hold --------------------------------------------------------------
@pytest.mark.parametrize("bad", ["99999999999999999999999", "9223372036854775808", "1" * 5000])
def test_an_id_too_big_for_sqlite_is_an_unknown_conversation(
    store: HistoryStore, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    _conversation(store)
    for action in (["show", bad], ["export", bad, "-o", "-"], ["delete", bad, "--yes"]):
        code, out, err = _cli(capsys, *action)
        assert code == 2 and out == "", (action, err)
        assert err.startswith("mergechat: error: no conversation with id ") and err.count("\n") == 1
    with pytest.raises(UnknownConversation):
        store.get_conversation(int(bad[:30]))
    with pytest.raises(UnknownConversation):
        store.delete(2**64)


def test_a_non_ascii_digit_id_is_one_error_line(
    store: HistoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    _conversation(store)
    code, _, err = _cli(capsys, "show", "²")
    assert code == 2 and "positive whole number" in err


# -- item 4: one writer per conversation ----------------------------------------------------------
def test_a_conversation_has_one_holder_and_a_new_one_may_take_it_after(tmp_path: Path) -> None:
    mine, theirs = ConversationLocks(tmp_path / "locks"), ConversationLocks(tmp_path / "locks")
    assert mine.acquire(7) is None and mine.holds(7)
    assert theirs.acquire(7) == os.getpid()
    assert theirs.acquire(8) is None
    mine.release(7)
    assert not (tmp_path / "locks" / "conversation-7.lock").exists()
    assert theirs.acquire(7) is None


def test_a_killed_holder_does_not_keep_the_conversation(tmp_path: Path) -> None:
    folder = tmp_path / "locks"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from mergechat.core.store.lock import ConversationLocks\n"
            f"assert ConversationLocks(Path({str(folder)!r})).acquire(3) is None\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        locks = ConversationLocks(folder)
        assert locks.acquire(3) == holder.pid
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert locks.acquire(3) is None  # the kernel let the crashed owner's lock go
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_chat_never_continues_a_conversation_held_elsewhere(store: HistoryStore) -> None:
    conv = _conversation(store)
    other = ConversationLocks.beside(store.path)
    assert other.acquire(conv) is None
    notices: list[str] = []
    history = ChatRecorder(
        store, interval_s=0.0, locks=ConversationLocks.beside(store.path), on_notice=notices.append
    )
    assert history.resume_last("/m") == []
    assert history.conversation_id is None and "open in another mergechat" in notices[0]
    history.user_message("mine")
    assert history.conversation_id not in (None, conv)
    assert [m.text for m in store.get_conversation(conv).messages] == ["hello", "a reply"]
    other.release(conv)
    history.close()


# -- items 13 and 15: what produced a reply, and what the app had open -----------------------------
def test_a_reply_notes_what_produces_it_before_its_first_token(store: HistoryStore) -> None:
    history = ChatRecorder(store, interval_s=0.0)
    history.start("/m")
    history.user_message("q")
    history.reply_started("new", GenerationSettings(temperature=0.3))
    history.close()  # quit mid-reply
    reply = HistoryStore.open().get_conversation(1).messages[1]
    assert reply.state == "stopped" and reply.finish_reason == "stopped"
    assert reply.params is not None and reply.params["temperature"] == 0.3
    assert reply.model_path == "/m"


def test_the_last_opened_conversation_is_noted_per_model(store: HistoryStore) -> None:
    assert store.last_opened_in_app("/m") == (False, None)
    conv = _conversation(store)
    store.set_last_opened_in_app("/m", conv)
    store.set_last_opened_in_app("/other", None)
    assert store.last_opened_in_app("/m") == (True, conv)
    assert store.last_opened_in_app("/other") == (True, None)
    store.delete(conv)
    assert store.last_opened_in_app("/m") == (True, None)


def test_history_export_to_a_folder_never_replaces_an_earlier_export(
    store: HistoryStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conv = _conversation(store)
    first = tmp_path / f"mergechat-{conv}-hello.md"
    first.write_text("earlier")
    code, out, _ = _cli(capsys, "export", str(conv), "-o", str(tmp_path))
    assert code == 0 and out.endswith(f"mergechat-{conv}-hello-2.md\n")
    assert first.read_text() == "earlier"
