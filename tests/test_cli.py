"""The command line: flag validation, error format, exit codes, app options, one-shot end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.cli_process import run_mergechat
from mergechat import __version__
from mergechat.cli import app_launch
from mergechat.cli import args as cli_args
from mergechat.cli import main as cli
from mergechat.cli.oneshot import JSON_KEYS
from mergechat.core.settings.generation import GenerationSettings


@pytest.fixture
def header_only_model(tmp_path: Path) -> Path:
    """A folder that passes inspection (config + a valid safetensors file) but is never loaded."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "dtype": "bfloat16"}))
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}).encode()
    data = len(header).to_bytes(8, "little") + header + bytes(8)
    (folder / "model.safetensors").write_bytes(data)
    return folder


def _single_error(err: str) -> str:
    """Assert stderr is exactly one `mergechat: error:` line (no traceback); return it."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mergechat: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--temperature", "-1"], "--temperature: expected a finite number >= 0, got '-1'"),
        (["--temperature", "hot"], "--temperature: expected a finite number >= 0"),
        (["--temperature", "inf"], "--temperature: expected a finite number >= 0"),
        (["--top-p", "0"], "--top-p: expected a number in (0, 1]"),
        (["--top-p", "1.5"], "--top-p"),
        (["--top-k", "-3"], "--top-k: expected an integer >= 0"),
        (["--top-k", "2.5"], "--top-k"),
        (["--max-new-tokens", "0"], "--max-new-tokens: expected an integer >= 1"),
        (["--repetition-penalty", "0"], "--repetition-penalty: expected a finite number > 0"),
        (["--seed", "-1"], "--seed"),
        (["--seed", "4294967296"], "--seed: expected an integer from 0 to 4294967295"),
        (["--dtype", "int4"], "unknown dtype 'int4'; choose auto, float32, bfloat16, float16"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--device", "cuda:x"], "unknown device"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--temp", "1"], "unrecognized arguments"),  # no abbreviations
        (["--prompt"], "--prompt: expected one argument"),
    ],
)
def test_bad_flag_values_exit_2_with_one_line(
    flags: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(flags) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert fragment in _single_error(captured.err)


def test_doctor_bad_flags_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor", "--dtype", "int8"]) == 2
    assert "unknown dtype 'int8'" in _single_error(capsys.readouterr().err)
    assert cli.main(["doctor", "--prompt", "x"]) == 2
    assert "unrecognized arguments: --prompt" in _single_error(capsys.readouterr().err)


def test_nonexistent_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert cli.main([str(missing), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"mergechat: error: model path does not exist: {missing}"
    assert err.splitlines()[1].startswith("  hint: ")
    assert cli.main(["doctor", str(missing)]) == 2


def test_folder_that_is_not_a_model_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    assert cli.main([str(tmp_path), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mergechat: error: not a model folder: no config.json")
    assert "Traceback" not in err


def test_json_needs_prompt_and_prompt_needs_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([str(tmp_path), "--json"]) == 2
    assert "--json needs --prompt" in capsys.readouterr().err
    assert cli.main(["--prompt", "hi"]) == 2
    assert "--prompt needs a model PATH" in capsys.readouterr().err


def test_unavailable_cuda_device_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([str(tmp_path), "--prompt", "hi", "--device", "cuda:3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mergechat: error: device cuda:3 is not available")
    assert "Traceback" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"mergechat {__version__} (torch ")
    assert "transformers" in out


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--prompt", "--json", "--device", "--dtype", "--max-new-tokens", "--temperature",
        "--top-p", "--top-k", "--repetition-penalty", "--seed", "--system",
        "--trust-remote-code", "--debug", "--version", "mergechat doctor",
    ):  # fmt: skip
        assert flag in out
    assert cli.main(["doctor", "--help"]) == 0
    assert "--refresh" in capsys.readouterr().out


def test_generation_settings_from_flags() -> None:
    args, _ = cli.parse(
        ["--temperature", "0", "--top-p", "0.9", "--top-k", "40", "--max-new-tokens", "8",
         "--repetition-penalty", "1.1", "--seed", "3", "--system", "Be brief.", "--dtype", "bf16"]
    )  # fmt: skip
    assert cli_args.generation_settings(args) == GenerationSettings(
        temperature=0.0,
        top_p=0.9,
        top_k=40,
        max_new_tokens=8,
        repetition_penalty=1.1,
        seed=3,
        system_prompt="Be brief.",
    )
    assert args.dtype == "bfloat16"
    defaults, _ = cli.parse([])
    assert cli_args.generation_settings(defaults) == GenerationSettings()


def test_app_options_keep_unset_flags_none(tmp_path: Path) -> None:
    args, _ = cli.parse([str(tmp_path), "--device", "CPU", "--temperature", "0.7", "--debug"])
    options = app_launch.app_options_from_args(args)
    assert options.model_path == tmp_path.resolve()
    assert options.device == "cpu"
    assert options.dtype is None
    assert dict(options.generation_overrides) == {"temperature": 0.7}
    assert options.trust_remote_code is False
    assert options.debug is True
    empty = app_launch.app_options_from_args(cli.parse([])[0])
    assert empty.model_path is None and empty.device is None
    assert dict(empty.generation_overrides) == {}


def test_app_mode_reports_missing_app_or_runs_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(app_launch, "require_terminal", lambda: None)  # pytest's stdin is no tty
    assert cli.main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mergechat: error: the app is not available yet")


def test_app_mode_hands_options_to_run_app(
    header_only_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mergechat.ui.app
    from mergechat.ui.options import AppOptions

    seen: list[AppOptions] = []

    def fake_run_app(options: AppOptions) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(mergechat.ui.app, "run_app", fake_run_app)
    monkeypatch.setattr(app_launch, "require_terminal", lambda: None)  # pytest's stdin is no tty
    assert cli.main([str(header_only_model), "--dtype", "fp16", "--seed", "5"]) == 0
    assert seen == [
        AppOptions(
            model_path=header_only_model.resolve(),
            dtype="float16",
            generation_overrides={"seed": 5},
        )
    ]


def test_unexpected_error_traceback_only_with_debug(
    header_only_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mergechat.cli.oneshot

    def boom(*args: object, **kwargs: object) -> int:
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(mergechat.cli.oneshot, "run_oneshot", boom)
    assert cli.main([str(header_only_model), "--prompt", "hi"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[0] == "mergechat: error: unexpected RuntimeError: engine exploded"
    assert cli.main([str(header_only_model), "--prompt", "hi", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1] == (
        "mergechat: error: unexpected RuntimeError: engine exploded"
    )


def test_keyboard_interrupt_exits_130_quietly(
    header_only_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mergechat.cli.oneshot

    def interrupted(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(mergechat.cli.oneshot, "run_oneshot", interrupted)
    assert cli.main([str(header_only_model), "--prompt", "hi"]) == 130
    assert capsys.readouterr().err == ""


# -- real tiny models -----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("dtype_flags", [[], ["--dtype", "float16"]])
def test_oneshot_real_merge(
    tiny_merge_dir: Path, dtype_flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(tiny_merge_dir), "--prompt", "Hello", "--max-new-tokens", "12", "--device", "cpu"]
    assert cli.main(argv + dtype_flags + ["--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n")
    assert out.strip()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dtype_flags", "expected"),
    [([], None), (["--dtype", "bfloat16"], "bfloat16"), (["--dtype", "fp16"], "float16")],
)
def test_oneshot_json_real_merge(
    tiny_merge_dir: Path,
    dtype_flags: list[str],
    expected: str | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if expected is None:
        # auto loads what doctor recommends for this machine (same probe cache).
        assert cli.main(["doctor", str(tiny_merge_dir), "--json"]) == 0
        doctor = json.loads(capsys.readouterr().out)
        expected = doctor["assessment"]["recommendation"]["dtype"]
    argv = [str(tiny_merge_dir), "--prompt", "Hello", "--max-new-tokens", "8", "--json"]
    assert cli.main(argv + dtype_flags) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert set(JSON_KEYS) <= set(data)
    # The dtype is read from the loaded model's parameters, not echoed from the request.
    assert data["dtype"] == expected
    assert data["device"] == "cpu"
    assert isinstance(data["reply"], str)
    assert data["new_tokens"] >= 1 and data["prompt_tokens"] >= 1
    assert data["total_s"] >= data["ttft_s"] > 0


@pytest.mark.slow
def test_python_m_mergechat_subprocess(tiny_merge_dir: Path) -> None:
    prompt = ["--prompt", "Hello", "--max-new-tokens", "10", "--temperature", "0"]
    proc = run_mergechat(str(tiny_merge_dir), *prompt, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and proc.stdout.endswith("\n")
    assert "Traceback" not in proc.stderr
    bad = run_mergechat(str(tiny_merge_dir), "--top-p", "2", timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "mergechat: error: argument --top-p: expected a number in (0, 1], got '2'"
    ]


@pytest.mark.slow
def test_ctrl_c_during_reply_keeps_partial_and_exits_130(tiny_merge_dir: Path) -> None:
    import signal

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # Greedy decoding of the random tiny model never emits EOS, so 480 tokens keep it busy.
    cmd = [sys.executable, "-m", "mergechat", str(tiny_merge_dir), "--prompt", "Hello",
           "--max-new-tokens", "480", "--temperature", "0", "--dtype", "float32"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    first = proc.stdout.read(1)  # the reply is streaming now
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    out = (first + rest).decode("utf-8", "replace")
    assert proc.returncode == 130, err
    assert out.endswith("\n") and out.strip()
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err


def test_app_mode_opens_on_a_missing_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app itself says the path is missing and lets settings pick another model."""
    import mergechat.ui.app
    from mergechat.ui.options import AppOptions

    seen: list[AppOptions] = []
    monkeypatch.setattr(mergechat.ui.app, "run_app", lambda options: seen.append(options) or 0)
    monkeypatch.setattr(app_launch, "require_terminal", lambda: None)  # pytest's stdin is no tty
    missing = tmp_path / "gone" / "model"
    assert cli.main([str(missing)]) == 0
    assert [options.model_path for options in seen] == [missing]
