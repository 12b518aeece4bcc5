"""Issue 14's bad input for ``mergechat compare``: a missing recipe source, more than four models,
another tokenizer (still compared, with a note) and a model that fails to load (its result
carries the error, the others answer); one error line (and its hint), never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mergechat.cli.main import main

SHORT = ["--prompt", "Hi", "--max-new-tokens", "4", "--device", "cpu", "--no-history"]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["compare", *argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return rc, captured.out, captured.err


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("mergechat: error: ")]


def test_a_recipe_naming_a_missing_source_is_one_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    recipe = "merge_method: slerp\nbase_model: /nowhere/base-model\nmodels:\n  - model: x\n"
    (merged / "mergekit_config.yml").write_text(recipe)
    rc, out, err = _run([str(merged), "--prompt", "hi"], capsys)
    assert rc == 2 and out == ""
    (line,) = _errors(err)
    assert "the recipe's base '/nowhere/base-model' is not on this machine" in line
    assert err.splitlines()[1].startswith("  hint: check the path or name the models")


def test_more_than_four_models_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run([*(f"/nowhere/{n}" for n in "abcde"), "--prompt", "hi"], capsys)
    assert rc == 2
    assert _errors(err) == ["mergechat: error: compare takes at most 4 models, got 5"]


@pytest.mark.slow
def test_another_tokenizer_is_compared_by_word_with_a_note(
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fixtures.tiny_models import build_tiny_llama

    monkeypatch.setenv("MERGECHAT_ENGINE", "thread")  # no engine processes: a faster test
    other = build_tiny_llama(tmp_path / "other", vocab_size=300, seed=1)
    rc, out, err = _run([str(tiny_model_dir), str(other), *SHORT, "--json"], capsys)
    assert rc == 0 and not _errors(err)
    first, second = json.loads(out)["models"]
    assert first["error"] is None and second["error"] is None
    assert second["new_tokens"] >= 1
    assert second["divergence_from_base"]["unit"] == "word"
    (note,) = (n for n in second["notes"] if "tokenizer" in n)
    assert "its tokenizer differs" in note and "still comparable" in note
    assert not any("tokenizer" in n for n in first["notes"])


@pytest.mark.slow
def test_a_model_that_fails_to_load_carries_its_error_and_the_others_answer(
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fixtures.broken_models import build_truncated_safetensors

    monkeypatch.setenv("MERGECHAT_ENGINE", "thread")
    broken = build_truncated_safetensors(tmp_path, tiny_model_dir)
    rc, out, err = _run([str(tiny_model_dir), str(broken), *SHORT], capsys)
    assert rc == 0 and not _errors(err)
    summary = out.splitlines()[-2:]
    assert summary[0].startswith(f"{tiny_model_dir.name} · cpu ")
    assert summary[1].startswith("truncated: failed: ") and "model.safetensors" in summary[1]
    assert f"== {tiny_model_dir.name} ==" in out and "== truncated ==" not in out


def test_an_abbreviated_flag_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(["/nowhere/a", "/nowhere/b", "--promp", "hi"], capsys)
    assert rc == 2 and _errors(err) == ["mergechat: error: unrecognized arguments: --promp hi"]
