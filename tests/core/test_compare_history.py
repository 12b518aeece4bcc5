"""A comparison is one conversation: the prompt, then each model's reply under its own name."""

from __future__ import annotations

from pathlib import Path

from mergechat.core.api import ReplyStats
from mergechat.core.compare.events import ModelResult
from mergechat.core.compare.history import save_comparison
from mergechat.core.compare.plan import CompareModel
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.export import to_dict, to_markdown
from mergechat.core.store.store import HistoryStore


def _result(index: int, name: str, reply: str, error: str | None = None) -> ModelResult:
    model = CompareModel(name, "source", Path("/models") / name, name)
    stats = None if error else ReplyStats(3, 4, 0.1, 0.5, 8.0, 7, 512, "float32", "cpu")
    finish = None if error else "complete"
    return ModelResult(index, model, reply=reply, stats=stats, finish=finish, error=error)


def test_each_reply_is_saved_with_its_model_and_exported_under_its_name(tmp_path: Path) -> None:
    results = [
        _result(0, "merged", "Merged says hi."),
        _result(1, "base", "Base says hello."),
        _result(2, "broken", "", error="cannot load broken"),
    ]
    with HistoryStore.open(tmp_path / "history.db") as store:
        conv_id = save_comparison(store, "Say hi", GenerationSettings(temperature=0.0), results)
        conversation = store.get_conversation(conv_id)
    user, *replies = conversation.messages
    assert (user.role, user.text) == ("user", "Say hi")
    assert [(m.text, m.state, m.model_path) for m in replies] == [
        ("Merged says hi.", "complete", "/models/merged"),
        ("Base says hello.", "complete", "/models/base"),
        ("", "failed", "/models/broken"),
    ]
    assert replies[0].new_tokens == 4 and replies[2].error == "cannot load broken"
    markdown = to_markdown(conversation)
    headings = [line.split(" · ")[0] for line in markdown.splitlines() if line.startswith("## ")]
    assert headings == ["## You", "## merged", "## base", "## broken"]
    assert markdown.index("Merged says hi.") < markdown.index("Base says hello.")
    messages = to_dict(conversation)["conversation"]["messages"]  # type: ignore[index]
    assert [m["model_path"] for m in messages] == [
        None,
        "/models/merged",
        "/models/base",
        "/models/broken",
    ]


def test_a_plain_chat_keeps_its_assistant_headings(tmp_path: Path) -> None:
    with HistoryStore.open(tmp_path / "history.db") as store:
        conv_id = store.new_conversation("/models/one")
        store.add_message(conv_id, "user", "hi")
        store.add_message(conv_id, "assistant", "hello")
        markdown = to_markdown(store.get_conversation(conv_id))
    assert "## Assistant · " in markdown
