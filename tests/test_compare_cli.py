"""``mergechat compare``: a real merge and its sources answer one prompt (tiny models, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mergechat.cli.main import main
from mergechat.core.store.export import to_markdown
from mergechat.core.store.store import HistoryStore


@pytest.mark.slow
def test_a_merge_and_its_sources_answer_one_prompt_as_json_and_are_saved(
    tiny_merge_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", str(tiny_merge_dir), "--prompt", "Say hi", "--json", "--max-new-tokens", "6"]
    assert main([*argv, "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    models = data["models"]
    assert [m["role"] for m in models] == ["merge", "base", "source", "source"]
    assert [Path(m["model"]).name for m in models] == ["merged", "base", "a", "b"]
    for entry in models:
        assert entry["error"] is None
        assert entry["device"] == "cpu" and entry["dtype"] == models[0]["dtype"]
        assert 1 <= entry["new_tokens"] <= 6 and entry["ttft_s"] > 0
        assert entry["decode_tokens_per_s"] is None or entry["decode_tokens_per_s"] >= 0
        assert 0.0 <= entry["agreement_with_merge"] <= 1.0
    # Greedy: the merge agrees with its own reply; the sources' replies are measured from the
    # base's, token by token (one tokenizer for all).
    assert models[0]["agreement_with_merge"] == 1.0
    assert models[1]["divergence_from_base"] is None
    assert models[2]["divergence_from_base"]["unit"] == "token"
    assert "fit together" in captured.err
    with HistoryStore.open() as store:
        (summary,) = store.list_conversations()
        conversation = store.get_conversation(summary.id)
    replies = [m for m in conversation.messages if m.role == "assistant"]
    assert [m.text for m in replies] == [m["reply"] for m in models]
    assert [Path(m.model_path or "").name for m in replies] == ["merged", "base", "a", "b"]
    markdown = to_markdown(conversation)
    headings = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert [h.split(" · ")[0] for h in headings] == [
        "## You",
        "## merged",
        "## base",
        "## a",
        "## b",
    ]


def test_compare_without_a_prompt_opens_the_view_which_needs_a_terminal(
    tiny_merge_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # pytest's stdin is no terminal: one error line with the one-shot hint, no traceback.
    assert main(["compare", str(tiny_merge_dir)]) == 2
    err = capsys.readouterr().err
    assert "the app needs a terminal" in err and "--prompt TEXT" in err
    assert "Traceback" not in err
    assert main(["compare", str(tiny_merge_dir), "--json"]) == 2
    assert "--json needs --prompt" in capsys.readouterr().err


def test_a_missing_model_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "/nowhere/x", "/nowhere/y", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mergechat: error: model '/nowhere/x' is not on this machine")
    assert "Traceback" not in err
