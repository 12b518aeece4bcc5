"""Issue 7's bad-input matrix for the one-shot CLI and `mergechat doctor`.

Every row of `fixtures.broken_models.CASES`, plus bad flags and out-of-memory at load and
mid-reply, must end in one ``mergechat: error:`` line (or one warning line where the model still
chats), the right exit code (2 bad input, 1 failure) and no traceback. Most runs are in-process
(`cli.main`); a few real subprocesses prove nothing else reaches a real stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fixtures.broken_models import CASES, PAYLOAD_MARKER, Case, build_pickle_bin_payload
from mergechat.cli import main as cli

ONESHOT_FLAGS = ["--prompt", "hi", "--max-new-tokens", "4", "--temperature", "0", "--json"]
ONESHOT_FLAGS += ["--no-history"]
_CUDA_OOM = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 15.77 GiB of "
    "which 1.05 GiB is free. Including non-PyTorch memory, this process has 14.71 GiB in use."
)
_CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
    "tried to allocate 123456789012 bytes. Error code 12 (Cannot allocate memory)"
)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def steady_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every dtype probes equally fast, so no machine-dependent speed note joins the output."""
    from mergechat.core.detect import probe
    from mergechat.core.detect.capabilities import Capabilities, ProbeResult
    from mergechat.core.detect.devices import detect_devices
    from mergechat.core.dtypes import DTYPES

    devices = detect_devices()
    probes = tuple(ProbeResult(d.id, t, "ok", 1e-3, 1.0) for d in devices for t in DTYPES)
    caps = Capabilities(devices, probes, str(torch.__version__), 0.0, from_cache=True)
    monkeypatch.setattr(probe, "detect", lambda **_kwargs: caps)


@pytest.fixture(autouse=True)
def _quiet_gguf_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process only: the CLI sets TQDM_DISABLE, which tqdm reads when first imported (long
    before, in a test session). `test_real_processes_print_no_traceback` covers a real run."""
    import functools

    from tqdm.auto import tqdm  # type: ignore[import-untyped]
    from transformers import modeling_gguf_pytorch_utils

    monkeypatch.setattr(modeling_gguf_pytorch_utils, "tqdm", functools.partial(tqdm, disable=True))


@pytest.fixture
def built(tiny_model_dir: Path, tmp_path: Path) -> Iterator[dict[str, tuple[Path, Path]]]:
    """Builds a case on demand: name -> (root, path); checks no payload ever ran."""
    made: dict[str, tuple[Path, Path]] = {}

    class Builder(dict[str, tuple[Path, Path]]):
        def __missing__(self, name: str) -> tuple[Path, Path]:
            root = tmp_path / name
            root.mkdir()
            made[name] = (root, CASES[name].builder(root, tiny_model_dir))
            return made[name]

    yield Builder()
    for root, _path in made.values():
        assert not (root / PAYLOAD_MARKER).exists(), "a pickle payload was executed"


# -- checks ---------------------------------------------------------------------------------------
def _lines(err: str, kind: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"mergechat: {kind}: ")]


def assert_outcome(
    expected: str, exit_code: int, must_contain: tuple[str, ...], rc: int, out: str, err: str
) -> None:
    """One error line (or one warning line, or none), the exit code, no traceback, no noise."""
    assert "Traceback" not in out + err
    assert rc == exit_code, f"exit {rc}, stderr:\n{err}"
    noise = [
        line
        for line in err.splitlines()
        if not line.startswith(("mergechat: error: ", "mergechat: warning: ", "  hint: "))
    ]
    assert not noise, f"unexpected stderr lines: {noise}"
    errors, warnings = _lines(err, "error"), _lines(err, "warning")
    if expected == "error":
        assert len(errors) == 1 and not warnings, err
        line = errors[0]
    elif expected == "warning":
        assert not errors and len(warnings) == 1, err
        line = warnings[0]
    else:
        assert not errors and not warnings, err
        return
    for text in must_contain:
        assert text in line, f"{text!r} not in {line!r}"


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli.main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _assert_reply(out: str) -> None:
    """A real reply came: one JSON object with new tokens, read from the loaded model."""
    result = json.loads(out)
    assert result["new_tokens"] >= 1 and isinstance(result["reply"], str)
    assert result["device"] == "cpu" and result["dtype"] in ("float32", "bfloat16", "float16")


# -- the matrix: one-shot CLI and doctor ----------------------------------------------------------
@pytest.fixture(params=list(CASES))
def row(request: pytest.FixtureRequest, built: dict[str, tuple[Path, Path]]) -> tuple[Case, Path]:
    """One case of the matrix (tests run once per case) and the model built for it."""
    return CASES[request.param], built[request.param][1]


def test_oneshot_matrix(
    row: tuple[Case, Path], steady_probes: None, capsys: pytest.CaptureFixture[str]
) -> None:
    case, path = row
    rc, out, err = _run_main([str(path), *ONESHOT_FLAGS], capsys)
    assert_outcome(case.expected, case.exit_code, case.must_contain, rc, out, err)
    if case.expected == "error":
        assert out == ""
    else:
        _assert_reply(out)


def test_doctor_matrix(
    row: tuple[Case, Path], steady_probes: None, capsys: pytest.CaptureFixture[str]
) -> None:
    case, path = row
    rc, out, err = _run_main(["doctor", str(path)], capsys)
    assert_outcome(case.doctor_expected, case.doctor_exit_code, case.must_contain, rc, out, err)
    if rc == 0:
        assert "Recommendation" in out  # doctor never loads weights: these report in full
        if case.expected == "warning":  # what the chat warns about is in the report
            assert all(text.lower() in out.lower() for text in case.must_contain), out
    elif out:
        assert "Problems" in out  # described in full, but it cannot chat: the problem is listed


# -- rows that need more than an exit code --------------------------------------------------------
def test_payload_fixture_really_runs_code_when_fully_unpickled(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Control: full unpickling of the fixture does run its payload (so the matrix proves it
    is never fully unpickled by mergechat)."""
    folder = build_pickle_bin_payload(tmp_path, tiny_model_dir)
    torch.load(folder / "pytorch_model.bin", weights_only=False)
    assert (tmp_path / PAYLOAD_MARKER).read_text() == "ran"


def test_pickle_bin_is_loaded_with_weights_only(
    built: dict[str, tuple[Path, Path]],
    steady_probes: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[Any] = []
    real_load = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    _root, path = built["pickle_bin"]
    rc, _out, err = _run_main([str(path), *ONESHOT_FLAGS], capsys)
    assert rc == 0, err
    assert calls and all(flag is True for flag in calls), calls


def test_nan_row_is_caught_by_the_first_forward(
    built: dict[str, tuple[Path, Path]], steady_probes: None, capsys: pytest.CaptureFixture[str]
) -> None:
    _root, path = built["nan_weights"]
    rc, _out, err = _run_main([str(path), *ONESHOT_FLAGS, "--dtype", "float32"], capsys)
    assert rc == 2
    (line,) = _lines(err, "error")
    assert "model.norm.weight holds NaN" in line and "first forward pass" in line


# -- flags ----------------------------------------------------------------------------------------
@pytest.fixture
def no_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without CUDA or MPS, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--dtype", "int4"], ("unknown dtype 'int4'",)),
        (["--dtype", "float64"], ("unknown dtype 'float64'",)),
        (["--device", "tpu"], ("unknown device 'tpu'",)),
        (["--device", "cuda:3"], ("device cuda:3 is not available",)),
        (["--device", "mps"], ("device mps is not available",)),
    ],
    ids=["dtype-int4", "dtype-float64", "device-tpu", "device-cuda3", "device-mps"],
)
@pytest.mark.parametrize("mode", ["oneshot", "doctor"])
def test_flag_matrix(
    mode: str,
    flags: list[str],
    fragments: tuple[str, ...],
    tiny_model_dir: Path,
    no_accelerators: None,
    steady_probes: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [str(tiny_model_dir), *ONESHOT_FLAGS, *flags]
    if mode == "doctor":
        argv = ["doctor", str(tiny_model_dir), *flags]
    rc, out, err = _run_main(argv, capsys)
    assert_outcome("error", 2, fragments, rc, out if mode == "oneshot" else "", err)


# -- out of memory --------------------------------------------------------------------------------
def _oom(kind: str) -> BaseException:
    return torch.OutOfMemoryError(_CUDA_OOM) if kind == "cuda" else RuntimeError(_CPU_OOM)


@pytest.mark.parametrize("kind", ["cuda", "cpu"])
def test_out_of_memory_at_load(
    kind: str,
    tiny_model_dir: Path,
    steady_probes: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from transformers import AutoModelForCausalLM

    def no_memory(*_args: Any, **_kwargs: Any) -> Any:
        raise _oom(kind)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_memory)
    rc, out, err = _run_main([str(tiny_model_dir), *ONESHOT_FLAGS, "--dtype", "float32"], capsys)
    head = "out of memory on" if kind == "cuda" else "not enough RAM"
    assert_outcome("error", 1, (head, "loading the model", "needed", "free"), rc, out, err)
    assert "smaller dtype" in err and "offload" in err
    assert out == ""


@pytest.mark.parametrize("kind", ["cuda", "cpu"])
def test_out_of_memory_mid_reply(
    kind: str,
    tiny_model_dir: Path,
    steady_probes: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from transformers import LlamaForCausalLM

    real_forward = LlamaForCausalLM.forward
    steps: list[int] = []

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[-1] == 1:  # a decode step: the reply has begun
            steps.append(1)
            raise _oom(kind)
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", forward)
    argv = [str(tiny_model_dir), *ONESHOT_FLAGS[:-2], "--no-history", "--dtype", "float32"]
    rc, out, err = _run_main(argv, capsys)
    assert steps, "the reply never reached a decode step"
    if kind == "cuda":
        fragments: tuple[str, ...] = (
            "out of memory",
            "tried to allocate 2.00 GiB",
            "1.05 GiB free",
        )
    else:
        fragments = ("not enough RAM", "tried to allocate 115.0 GiB", "free")
    assert_outcome("error", 1, fragments, rc, "", err)
    assert "smaller dtype" in err and "offload" in err
    assert out.strip(), "the partial reply (the first token) is still printed"


# -- real processes: nothing but the one line reaches a real stderr -------------------------------
_SUBPROCESS_ROWS = ("pickle_bin_payload", "nan_weights", "gguf_only")


def test_real_processes_print_no_traceback(
    built: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    runs: list[tuple[str, list[str]]] = []
    for name in _SUBPROCESS_ROWS:
        path = built[name][1]
        runs.append((name, [str(path), "--prompt", "hi", "--max-new-tokens", "2", "--no-history"]))
    runs.append(("tokenizer_too_big", ["doctor", str(built["tokenizer_too_big"][1])]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    procs = [
        (
            name,
            subprocess.Popen(
                [sys.executable, "-m", "mergechat", *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            ),
        )
        for name, argv in runs
    ]
    for name, proc in procs:
        out, err = proc.communicate(timeout=120)
        case = CASES[name]
        assert "Traceback" not in out + err
        assert proc.returncode == case.exit_code, err
        if case.expected == "works":
            assert out.strip() and not _lines(err, "error"), err
        else:
            (line,) = _lines(err, "error")
            assert all(text in line for text in case.must_contain), line
        assert all(ln.startswith(("mergechat: ", "  hint: ")) for ln in err.splitlines()), err
