"""Markdown and JSON exports of stored conversations."""

from __future__ import annotations

import json
from pathlib import Path

import platformdirs
import pytest

from fixtures.history_data import STATS, add_turn
from mergechat.core.errors import MergechatError
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store import export
from mergechat.core.store.store import Conversation, HistoryStore

SETTINGS = GenerationSettings(temperature=0.7, top_p=0.9, max_new_tokens=64, seed=7)


@pytest.fixture
def conversation(tmp_path: Path) -> Conversation:
    with HistoryStore.open(tmp_path / "h.sqlite3") as store:
        conv = store.new_conversation(tmp_path / "merged-model")
        add_turn(
            store,
            conv,
            "Write *hello* in Python",
            "```python\nprint('hello')\n```",
            "complete",
            stats=STATS,
            settings=SETTINGS,
            model_path=tmp_path / "merged-model",
            finish_reason="length",
        )
        terse = GenerationSettings(system_prompt="Be   terse.\nAlways.")
        add_turn(store, conv, "Again, différent", "Half", "stopped", stats=STATS, settings=terse)
        add_turn(store, conv, "Third", "", "failed", error="CUDA out of memory")
        store.add_message(conv, "user", "Fourth")
        store.add_message(conv, "assistant", "cut by a crash", state="streaming")
        return store.get_conversation(conv)


def test_markdown_names_model_device_precision_and_parameters_per_reply(
    conversation: Conversation, tmp_path: Path
) -> None:
    text = export.to_markdown(conversation)
    assert text.startswith("# Write *hello* in Python\n")
    assert f"- Model: `{(tmp_path / 'merged-model').resolve()}`" in text
    assert "```python\nprint('hello')\n```" in text
    sections = text.split("\n## ")
    assert [s.split(" · ")[0] for s in sections[1:]] == ["You", "Assistant"] * 4
    first_reply = sections[2]
    assert "> - Device: cpu · Precision: bfloat16" in first_reply
    assert "> - Parameters: temperature 0.7 · top_p 0.9 · max_new_tokens 64 · seed 7" in first_reply
    assert "> - Tokens: 21 prompt · 64 new · 47.2 tok/s · first token 0.31 s · 2.00 s total" in (
        first_reply
    )
    assert "> - Ended: reached max_new_tokens" in first_reply
    second_reply = sections[4]
    assert "> - Parameters: max_new_tokens 512" in second_reply
    assert "> - System prompt: Be terse. Always." in second_reply
    assert "> - Ended: stopped by the user" in second_reply
    assert "*(no text)*" in sections[6] and "> - Ended: failed: CUDA out of memory" in sections[6]
    assert "> - Ended: interrupted" in sections[8]


def test_json_holds_everything_in_the_store(conversation: Conversation) -> None:
    data = json.loads(export.to_json(conversation))
    assert data["format"] == "mergechat.conversation" and data["format_version"] == 1
    conv = data["conversation"]
    assert conv["id"] == conversation.id and conv["title"] == conversation.title
    assert conv["model_path"] == conversation.model_path
    assert conv["created"].endswith("+00:00")
    assert len(conv["messages"]) == len(conversation.messages) == 8
    first = conv["messages"][1]
    stored = conversation.messages[1]
    expected_keys = set(stored.__dataclass_fields__)
    assert set(first) == expected_keys
    assert first["params"] == {
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": None,
        "max_new_tokens": 64,
        "repetition_penalty": None,
        "seed": 7,
        "system_prompt": "",
    }
    assert (first["dtype"], first["device"], first["tokens_per_s"], first["ttft_s"]) == (
        "bfloat16",
        "cpu",
        47.2,
        0.31,
    )
    assert conv["messages"][2]["text"] == "Again, différent"  # kept as UTF-8, not escaped
    assert "différent" in export.to_json(conversation)
    assert conv["messages"][5]["error"] == "CUDA out of memory"


def test_write_export_to_a_file_a_folder_and_the_documents_folder(
    conversation: Conversation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = export.write_export(conversation, "json", tmp_path / "out.json")
    assert json.loads(out.read_text(encoding="utf-8"))["conversation"]["id"] == conversation.id
    folder = tmp_path / "exports"
    folder.mkdir()
    out = export.write_export(conversation, "md", folder)
    assert out == folder / f"mergechat-{conversation.id}-write-hello-in-python.md"
    assert out.read_text(encoding="utf-8") == export.to_markdown(conversation)

    documents = tmp_path / "Documents"
    monkeypatch.setattr(platformdirs, "user_documents_dir", lambda: str(documents))
    monkeypatch.chdir(tmp_path)
    assert export.default_export_dir() == tmp_path  # no documents folder: current folder
    documents.mkdir()
    assert export.write_export(conversation, "md").parent == documents


def test_unwritable_export_raises_a_user_error(conversation: Conversation, tmp_path: Path) -> None:
    with pytest.raises(MergechatError, match="cannot write the export"):
        export.write_export(conversation, "md", tmp_path / "missing" / "x.md")


def test_a_cut_off_code_block_is_closed_so_it_does_not_swallow_the_rest() -> None:
    assert export.close_open_fence("x\n```py\nprint(1)") == "x\n```py\nprint(1)\n```"
    assert export.close_open_fence("````\n```\ninner\n```") == "````\n```\ninner\n```\n````"
    closed = "```\na\n```\n~~~\nb\n~~~"
    assert export.close_open_fence(closed) == closed
