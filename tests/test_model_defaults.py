"""Issue 16 item 8: invalid keys in a model's generation_config.json are ignored with a warning.

The model stays loadable, the user's flags still decide, and doctor names the ignored keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.broken_models import build_invalid_generation_defaults, copy_good
from fixtures.cli_process import run_mergechat
from mergechat.cli import main as cli
from mergechat.core.settings.model_defaults import describe, read_model_defaults


def _folder_with(tmp_path: Path, good: Path, text: str) -> Path:
    folder = copy_good(good, tmp_path / "model")
    (folder / "generation_config.json").write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("values", "ignored"),
    [
        ({"max_new_tokens": -5}, "max_new_tokens = -5 (must be an integer >= 1)"),
        ({"temperature": "hot"}, 'temperature = "hot" (must be a number >= 0)'),
        ({"top_p": 1.5}, "top_p = 1.5 (must be a number > 0 and <= 1)"),
        ({"top_k": 2.5}, "top_k = 2.5 (must be an integer >= 0)"),
        ({"repetition_penalty": True}, "repetition_penalty = true (must be a number > 0)"),
        ({"do_sample": "yes"}, 'do_sample = "yes" (must be true or false)'),
        ({"min_new_tokens": -1}, "min_new_tokens = -1 (must be an integer >= 0)"),
    ],
)
def test_each_invalid_key_is_dropped_and_named(
    values: dict[str, object], ignored: str, tmp_path: Path
) -> None:
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 2, **values}))
    defaults = read_model_defaults(tmp_path)
    assert defaults is not None and defaults.values is not None
    assert defaults.invalid == (ignored,)
    assert defaults.values == {"eos_token_id": 2}
    warning = defaults.warning or ""
    assert "generation_config.json" in warning and ignored in warning


def test_valid_defaults_are_kept_without_a_warning(tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"temperature": 0.7, "top_p": 0.9, "top_k": 40, "max_new_tokens": 64})
    )
    defaults = read_model_defaults(tmp_path)
    assert defaults is not None and defaults.warning is None and not defaults.invalid
    assert describe(tmp_path) == "yes (its defaults apply)"
    assert read_model_defaults(tmp_path / "absent") is None


def test_temperature_zero_means_greedy_as_in_mergechat_settings(tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text('{"do_sample": true, "temperature": 0}')
    defaults = read_model_defaults(tmp_path)
    assert defaults is not None and defaults.values == {"do_sample": False, "temperature": 0}


@pytest.mark.parametrize(("text", "reason"), [("{nope", "not valid JSON"), ("[1]", "object")])
def test_an_unreadable_file_is_ignored_whole(text: str, reason: str, tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text(text)
    defaults = read_model_defaults(tmp_path)
    assert defaults is not None and defaults.values is None
    assert reason in (defaults.warning or "") and reason in describe(tmp_path)


def test_escapes_in_a_value_are_not_echoed_raw(tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text(json.dumps({"temperature": "\x1b]0;t\x07"}))
    defaults = read_model_defaults(tmp_path)
    assert defaults is not None
    assert "\x1b" not in (defaults.warning or "") and "\\u001b" in (defaults.warning or "")


def test_real_cli_chats_with_the_flags_and_one_warning(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """No --temperature: the model's do_sample applies, with transformers' temperature."""
    folder = build_invalid_generation_defaults(tmp_path, tiny_model_dir)
    argv = [str(folder), "--prompt", "hi", "--max-new-tokens", "4", "--json", "--no-history"]
    proc = run_mergechat(*argv, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "generation_config.json" in ln]
    assert line.startswith("mergechat: warning: ")
    assert "max_new_tokens = -5" in line and 'temperature = "hot"' in line
    result = json.loads(proc.stdout)
    assert 1 <= result["new_tokens"] <= 4


def test_a_file_transformers_rejects_is_ignored_whole(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Keys mergechat does not check can still make transformers refuse the file."""
    folder = _folder_with(tmp_path, tiny_model_dir, '{"early_stopping": "sometimes"}')
    argv = [str(folder), "--prompt", "hi", "--max-new-tokens", "2", "--json", "--no-history"]
    rc = cli.main([*argv, "--temperature", "0", "--dtype", "float32"])
    err = capsys.readouterr().err
    assert rc == 0, err
    (line,) = [ln for ln in err.splitlines() if "generation_config.json" in ln]
    assert "transformers rejects it" in line


def test_doctor_row_names_the_invalid_keys(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = build_invalid_generation_defaults(tmp_path, tiny_model_dir)
    assert cli.main(["doctor", str(folder)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Generation config generation_config.json; invalid keys ignored:" in out
    assert "max_new_tokens = -5 (must be an integer >= 1)" in out
    assert 'temperature = "hot" (must be a number >= 0)' in out
    assert "its defaults apply" not in out
