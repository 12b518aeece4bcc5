"""``mergechat history list|show|export|delete`` through cli.main, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.history_data import add_turn
from mergechat.cli import main as cli
from mergechat.cli.history import build_history_parser, run_history
from mergechat.core.api import ReplyStats
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.store import HistoryStore, default_path

STATS = ReplyStats(9, 4, 0.05, 0.3, 31.5, 13, 4096, "float16", "cuda:0")


def test_history_is_a_registered_subcommand() -> None:
    assert cli.SUBCOMMANDS["history"] == (build_history_parser, run_history)


@pytest.fixture
def saved(tmp_path: Path) -> list[int]:
    """Two conversations; the second is the most recent."""
    with HistoryStore.open() as store:
        first = store.new_conversation(tmp_path / "alpha-merge")
        add_turn(
            store,
            first,
            "What is a DARE merge?",
            "It drops and rescales deltas.",
            "complete",
            stats=STATS,
            settings=GenerationSettings(temperature=0.2),
        )
        second = store.new_conversation(tmp_path / "beta")
        store.add_message(second, "user", "hi")
        return [first, second]


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["history", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mergechat: error: ")
    return lines[0]


def test_list_shows_id_updated_title_model_and_count(
    saved: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "list", "--debug")
    assert (code, err) == (0, "")
    header, newest, oldest = out.splitlines()
    assert header.split() == ["ID", "UPDATED", "MSGS", "MODEL", "TITLE"]
    assert newest.split()[0] == str(saved[1]) and newest.split()[3:] == ["1", "beta", "hi"]
    assert oldest.split()[0] == str(saved[0])
    assert oldest.endswith("2  alpha-merge  What is a DARE merge?")


def test_show_prints_the_markdown_transcript(
    saved: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "show", str(saved[0]))
    assert code == 0
    assert out.startswith("# What is a DARE merge?")
    assert "It drops and rescales deltas." in out
    assert "> - Device: cuda:0 · Precision: float16" in out
    assert "temperature 0.2" in out
    code, out, _ = _run(capsys, "show", "--last")
    assert code == 0 and out.startswith("# hi\n")


def test_export_markdown_and_json(
    saved: list[int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "chat.md"
    code, out, _ = _run(capsys, "export", str(saved[0]), "-o", str(target))
    assert code == 0 and out == f"exported conversation {saved[0]} to {target}\n"
    assert "Precision: float16" in target.read_text(encoding="utf-8")

    code, out, _ = _run(capsys, "export", str(saved[0]), "-o", str(tmp_path / "chat.json"))
    data = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert code == 0 and data["conversation"]["id"] == saved[0]
    assert data["conversation"]["messages"][1]["new_tokens"] == 4

    code, out, _ = _run(capsys, "export", "--last", "--format", "json", "-o", "-")
    assert code == 0 and json.loads(out)["conversation"]["id"] == saved[1]


def test_delete_needs_yes_without_a_terminal(
    saved: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "delete", str(saved[0]))
    assert code == 2 and out == ""
    assert "without confirmation; add --yes" in _one_error_line(err)
    code, out, _ = _run(capsys, "delete", str(saved[0]), "--yes")
    assert code == 0 and out.startswith(f"deleted conversation {saved[0]} ")
    with HistoryStore.open() as store:
        assert [s.id for s in store.list_conversations()] == [saved[1]]


def test_delete_asks_on_a_terminal(
    saved: list[int], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mergechat.cli.history._interactive", lambda: True)
    answers = iter(["n", "y"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert _run(capsys, "delete", str(saved[1]))[1] == "nothing deleted\n"
    assert _run(capsys, "delete", str(saved[1]))[0] == 0
    with HistoryStore.open() as store:
        assert [s.id for s in store.list_conversations()] == [saved[0]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "abc"], "a conversation id is a positive whole number, got 'abc'"),
        (["show", "0"], "positive whole number"),
        (["show", "999"], "no conversation with id 999"),
        (["export", "999", "-o", "-"], "no conversation with id 999"),
        (["delete", "999", "--yes"], "no conversation with id 999"),
        (["show"], "needs a conversation ID or --last"),
        (["show", "1", "--last"], "not both"),
        (["export", "1", "--format", "pdf"], "invalid choice: 'pdf'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    saved: list[int], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = _run(capsys, *args)
    assert (code, out) == (2, "")
    assert message in _one_error_line(err)


@pytest.mark.parametrize("args", [["list"], ["show", "--last"], ["export", "--last"]])
def test_empty_store_gives_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert not default_path().exists()
    code, _, err = _run(capsys, *args)
    assert code == 2 and "no conversations saved yet" in _one_error_line(err)
    assert not default_path().exists()  # looking does not create the database
    HistoryStore.open().close()
    code, _, err = _run(capsys, *args)
    assert code == 2 and "no conversations saved yet" in _one_error_line(err)


def test_corrupt_database_is_a_clear_failure(capsys: pytest.CaptureFixture[str]) -> None:
    default_path().parent.mkdir(parents=True)
    default_path().write_bytes(b"garbage" * 1000)
    code, _, err = _run(capsys, "list")
    assert code == 1
    first, hint = err.strip().splitlines()
    assert first.startswith("mergechat: error: cannot use the history database")
    assert "move it aside" in hint
