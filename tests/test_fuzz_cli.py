"""Fuzz the command line in-process: real flag names, random values, junk tokens.

Every run ends with exit code 0, 1, 2 or 130, prints no traceback (without --debug), writes
stderr lines only in mergechat's shapes, and never reports an "unexpected" error (that is what
`main` prints for an exception nobody turned into a clear message).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st

from fixtures.fuzz import fuzz_settings
from mergechat.cli import app_launch
from mergechat.cli import main as cli
from mergechat.core.model.demo_fetch import ENV_DEMO_WHEEL
from mergechat.core.settings import locations
from mergechat.core.store.store import HistoryStore

EXIT_CODES = {0, 1, 2, 130}
STDERR_SHAPES = (
    "mergechat: error: ",
    "mergechat: warning: ",
    "mergechat: note: ",
    "mergechat: demo: ",
    "  hint: ",
)

#: Model paths as typed; "{tmp}" is the test's folder. The tiny model is fuzzed separately.
MODEL_PATHS = [
    "~no-such-user-here/x",
    "a" * 300,
    "{tmp}/missing",
    "{tmp}/empty",
    "{tmp}/plain.txt",
    "{tmp}/garbage.gguf",
    "{tmp}/garbage-config",
    "$(touch {tmp}/marker)",
    "`touch {tmp}/marker`",
    "a b; touch {tmp}/marker",
    "ünïcödé 東京 🙂",
    "-",
    "--",
    "",
    " ",
    "~",
]
DEVICES = ["auto", "cpu", "cuda", "cuda:0", "cuda:99", "mps", "xpu", "tpu", "CPU", "cuda:-1", ""]
DTYPES = ["auto", "float32", "bfloat16", "float16", "fp16", "bf16", "half", "int8", "float64", ""]
NUMBERS = [
    "0", "1", "-1", "0.5", "1e400", "nan", "inf", "-inf", "1_000", "4294967296",
    "99999999999999999999", "0x10", "", " ", "١", "1e-400", "abc", "-0",
]  # fmt: skip

# argv tokens never hold a NUL (execve cannot pass one) and stay relative (no "/", so a junk
# `-o` value cannot write outside the test's folder).
_JUNK = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"), max_size=12
)
_VALUE = st.one_of(st.sampled_from(NUMBERS), _JUNK)

MAIN_OPTIONS: dict[str, Any] = {
    "--prompt": _JUNK,
    "--json": None,
    "--device": st.sampled_from(DEVICES) | _JUNK,
    "--dtype": st.sampled_from(DTYPES) | _JUNK,
    "--max-new-tokens": _VALUE,
    "--temperature": _VALUE,
    "--top-p": _VALUE,
    "--top-k": _VALUE,
    "--repetition-penalty": _VALUE,
    "--seed": _VALUE,
    "--system": _JUNK,
    "--demo": None,
    "--no-history": None,
    "--trust-remote-code": None,
    "--version": None,
    "--help": None,
    "-h": None,
}
DOCTOR_OPTIONS: dict[str, Any] = {
    "--json": None,
    "--device": st.sampled_from(DEVICES) | _JUNK,
    "--dtype": st.sampled_from(DTYPES) | _JUNK,
    "--demo": None,
    "--help": None,
}
HISTORY_ACTIONS = ["list", "show", "export", "delete", "", "rm"]
HISTORY_OPTIONS: dict[str, Any] = {
    "--last": None,
    "--format": st.sampled_from(["md", "json", "html", ""]),
    "-o": st.sampled_from(["-", "out.md", "out.json", "."]) | _JUNK,
    "--yes": None,
    "-y": None,
    "--help": None,
}
IDS = ["1", "2", "0", "-1", "99", "1.5", "x", "", "١"]


@st.composite
def argvs(draw: st.DrawFn, tmp: Path) -> list[str]:
    """A command line: a mode, its real flags with values, a path, and junk, in any order."""
    mode = draw(st.sampled_from(["main", "main", "doctor", "history"]))
    tokens: list[str] = []
    if mode == "history":
        tokens.append(draw(st.sampled_from(HISTORY_ACTIONS)))
        if draw(st.booleans()):
            tokens.append(draw(st.sampled_from(IDS)))
        options = HISTORY_OPTIONS
    else:
        if draw(st.booleans()):
            tokens.append(draw(st.sampled_from(MODEL_PATHS)).format(tmp=tmp))
        options = MAIN_OPTIONS if mode == "main" else DOCTOR_OPTIONS
    for flag in draw(st.lists(st.sampled_from(sorted(options)), max_size=5)):
        tokens.append(flag)
        value = options[flag]
        if value is not None and draw(st.integers(0, 9)) > 0:  # sometimes the value is missing
            tokens.append(draw(value))
    tokens += draw(
        st.lists(_JUNK | st.sampled_from(["--", "-x", "--no-such-flag", "="]), max_size=2)
    )
    order = draw(st.permutations(tokens))
    head = [] if mode == "main" else [mode]
    return head + list(order)


@pytest.fixture
def cli_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Path]:
    """A folder with broken models, a small history, no real app and no network for --demo."""
    import mergechat.ui.app as app_module

    shared_probes = locations.probe_cache_file()
    cache = tmp_path / "cache"
    cache.mkdir()
    if shared_probes.exists():  # keep the session's measured probes: doctor stays fast
        shutil.copy(shared_probes, cache / shared_probes.name)
    monkeypatch.setenv(locations.ENV_CACHE_DIR, str(cache))
    monkeypatch.setenv(ENV_DEMO_WHEEL, str(tmp_path / "no-such-wheel.whl"))
    monkeypatch.setattr(app_module, "run_app", lambda options: 0)  # the app is tested elsewhere
    monkeypatch.setattr(app_launch, "require_terminal", lambda: None)  # pytest's stdin is no tty
    (tmp_path / "empty").mkdir()
    (tmp_path / "plain.txt").write_text("not a model")
    (tmp_path / "garbage.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    (tmp_path / "garbage-config").mkdir()
    (tmp_path / "garbage-config" / "config.json").write_text("{not json")
    (tmp_path / "garbage-config" / "model.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{}")
    with HistoryStore.open() as store:
        conv = store.new_conversation(tmp_path / "missing")
        store.add_message(conv, "user", "hello")
        store.add_message(conv, "assistant", "hi \x1b[31m there")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    capsys.readouterr()
    yield tmp_path
    assert not (tmp_path / "marker").exists()


def run_and_check(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    debug = "--debug" in argv
    context = f"argv={argv!r}\nrc={code}\nstdout={out[-1500:]!r}\nstderr={err[-3000:]!r}"
    assert code in EXIT_CODES, context
    if not debug:
        assert "Traceback" not in out + err, context
        bad = [line for line in err.splitlines() if line and not line.startswith(STDERR_SHAPES)]
        assert bad == [], context
    errors = [line for line in err.splitlines() if line.startswith("mergechat: error: ")]
    assert len(errors) <= 1, context
    assert not any(line.startswith("mergechat: error: unexpected ") for line in errors), context
    assert (code == 0) == (errors == []) or code == 130, context
    return code, out, err


_CLI_FUZZ = fuzz_settings(80, HealthCheck.too_slow)


@_CLI_FUZZ
@given(data=st.data())
@example(data=None)  # the explicit cases below, once
def test_fuzz_command_lines(
    cli_env: Path, capsys: pytest.CaptureFixture[str], data: st.DataObject | None
) -> None:
    if data is None:
        for argv in (
            [],
            ["--prompt", "hi"],
            ["--json"],
            ["--demo", "--prompt", "hi"],
            [str(cli_env / "missing"), "--demo"],
            ["doctor", "--refresh", "--json"],
            ["doctor", str(cli_env / "garbage.gguf"), "--json"],
            ["history", "show", "--last"],
            ["history", "export", "1", "--format", "json", "-o", "-"],
            ["history", "delete", "1"],
            ["history", "show", "1", "--last"],
            ["--version"],
            ["--max-new-tokens", "0", "--prompt", "x", str(cli_env / "empty")],
        ):
            run_and_check(argv, capsys)
        return
    run_and_check(data.draw(argvs(cli_env), label="argv"), capsys)


@_CLI_FUZZ
@given(data=st.data())
def test_fuzz_command_lines_with_debug(
    cli_env: Path, capsys: pytest.CaptureFixture[str], data: st.DataObject
) -> None:
    """--debug anywhere: tracebacks may be shown, exit codes still hold."""
    argv = data.draw(argvs(cli_env), label="argv")
    run_and_check([*argv, "--debug"] if argv[:1] != ["history"] else argv, capsys)


# -- a real tiny model, a few examples ------------------------------------------------------------

_SAFE_NUMBERS = st.sampled_from(["0", "1", "0.5", "1e-3", "2", "50", "1e9"])
GEN_OPTIONS: dict[str, Any] = {
    "--temperature": _SAFE_NUMBERS,
    "--top-p": st.sampled_from(["1", "0.5", "1e-9", "2", "0"]),
    "--top-k": st.sampled_from(["0", "1", "50", "99999999999999999999"]),
    "--repetition-penalty": _SAFE_NUMBERS,
    "--seed": st.sampled_from(["0", "1", "4294967295", "4294967296", "-1", "x"]),
    "--system": _JUNK,
    "--dtype": st.sampled_from(["auto", "float32", "bf16", "float16"]),
    "--device": st.sampled_from(["auto", "cpu", "cuda"]),
    "--json": None,
    "--no-history": None,
}


@fuzz_settings(6, HealthCheck.too_slow)
@given(
    prompt=_JUNK,
    flags=st.lists(st.sampled_from(sorted(GEN_OPTIONS)), max_size=4, unique=True),
    data=st.data(),
)
def test_fuzz_one_shot_with_a_real_tiny_model(
    cli_env: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    prompt: str,
    flags: list[str],
    data: st.DataObject,
) -> None:
    argv = [str(tiny_model_dir), "--prompt", prompt, "--max-new-tokens", "1"]
    for flag in flags:
        argv.append(flag)
        if GEN_OPTIONS[flag] is not None:
            argv.append(data.draw(GEN_OPTIONS[flag], label=flag))
    code, out, _ = run_and_check(argv, capsys)
    if code == 0 and "--json" in argv:
        assert out.startswith("{") and out.count("\n") == 1


# -- inputs the fuzz once crashed on (kept as regressions) ---------------------------------------


@pytest.mark.parametrize("path", ["~no-such-user-here/model", "a" * 300], ids=["user", "long"])
@pytest.mark.parametrize("mode", [[], ["doctor"]], ids=["oneshot", "doctor"])
def test_unusable_paths_are_bad_input(
    cli_env: Path, capsys: pytest.CaptureFixture[str], path: str, mode: list[str]
) -> None:
    argv = [*mode, path] if mode else [path, "--prompt", "hi"]
    code, _, err = run_and_check(argv, capsys)
    assert code == 2 and path[:40] in err


def test_a_seed_too_large_for_numpy(
    cli_env: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(tiny_model_dir), "--prompt", "hi", "--max-new-tokens", "1", "--seed", "4294967296"]
    code, _, err = run_and_check(argv, capsys)
    assert code == 2 and "--seed" in err
