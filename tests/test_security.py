"""Security: no code from a model folder runs by default, paths are data, files are private.

Each "code runs" check uses a marker file that the folder's Python code (or a shell, if one
were ever involved) would create: its absence is the proof, and the trusted run that does
create it proves the folder really would have run code.
"""

from __future__ import annotations

import ast
import json
import os
import queue
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mergechat.cli.main import main
from mergechat.core.api import EngineEvent, LoadFailed, LoadRequest, ModelLoaded
from mergechat.core.model.target import model_key
from mergechat.core.settings import locations
from mergechat.core.settings.config import Config, load_config, save_config
from mergechat.core.settings.toml_text import toml_string
from mergechat.core.store.store import HistoryStore
from mergechat.core.visible import escape_control
from mergechat.ui.options import AppOptions
from mergechat.ui.start_config import effective_config, load_request

SRC = Path(__file__).resolve().parents[1] / "src" / "mergechat"

# -- model folders that ship code ------------------------------------------------------------------


def _marker_code(marker: Path) -> str:
    return f"from pathlib import Path\nPath({str(marker)!r}).write_text('the folder code ran')\n"


def make_code_folder(source: Path, folder: Path, marker: Path, *, model_type: str) -> Path:
    """A copy of ``source`` whose config.json and tokenizer_config.json name Python files of
    the folder (``auto_map``); importing any of them writes ``marker``."""
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
    }
    (folder / "config.json").write_text(json.dumps(config))
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    tok_config["auto_map"] = {"AutoTokenizer": [None, "tokenization_evil.EvilTokenizer"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config))
    code = _marker_code(marker)
    (folder / "configuration_evil.py").write_text(
        code + "from transformers import LlamaConfig\n\n"
        f"class EvilConfig(LlamaConfig):\n    model_type = {model_type!r}\n"
    )
    (folder / "modeling_evil.py").write_text(
        code + "from transformers import LlamaForCausalLM\n"
        "from .configuration_evil import EvilConfig\n\n"
        "class EvilForCausalLM(LlamaForCausalLM):\n    config_class = EvilConfig\n"
    )
    (folder / "tokenization_evil.py").write_text(
        code + "from transformers import PreTrainedTokenizerFast\n\n"
        "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    return folder


def says_it_ships_code(text: str) -> bool:
    """The message says the folder ships code and names the flag (or option) that runs it."""
    lower = text.lower()
    ships = "code" in lower and ("auto_map" in lower or "ships" in lower)
    return ships and ("--trust-remote-code" in lower or "trust_remote_code" in lower)


@pytest.fixture
def foreign_arch(tmp_path: Path, tiny_model_dir: Path) -> tuple[Path, Path]:
    """A folder whose model_type transformers does not know: it loads only by running code."""
    marker = tmp_path / "marker-foreign"
    folder = tmp_path / "models" / "ships-code-foreign"
    return make_code_folder(tiny_model_dir, folder, marker, model_type="evilmodel"), marker


@pytest.fixture
def known_arch(tmp_path: Path, tiny_model_dir: Path) -> tuple[Path, Path]:
    """A llama folder that also names its own code: transformers' built-in llama can load it."""
    marker = tmp_path / "marker-known"
    folder = tmp_path / "models" / "ships-code-llama"
    return make_code_folder(tiny_model_dir, folder, marker, model_type="llama"), marker


@pytest.fixture
def model_copy(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A copy of the tiny model that the test may change."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ask_once(capsys: pytest.CaptureFixture[str], model: Path) -> tuple[int, str, str]:
    """A one-token one-shot chat with ``model`` through ``cli.main``."""
    return run_cli(capsys, str(model), "--prompt", "hi", "--max-new-tokens", "1")


def load_through_engine(request: LoadRequest) -> EngineEvent:
    """Load ``request`` on a real engine thread, as the app does; the ModelLoaded/LoadFailed."""
    from mergechat.core.engine.engine import Engine

    events: queue.Queue[EngineEvent] = queue.Queue()
    engine = Engine(events.put)
    engine.start()
    try:
        engine.load(request)
        while True:
            event = events.get(timeout=180)
            if isinstance(event, ModelLoaded | LoadFailed):
                return event
    finally:
        engine.shutdown(timeout=30)


def app_request(model: Path | None = None) -> LoadRequest:
    """The load request the app makes from the config file (plus a PATH argument, if given)."""
    config, problems = load_config()
    assert problems == []
    effective, problems = effective_config(config, AppOptions(model_path=model))
    assert problems == []
    return load_request(effective)


def test_trust_is_off_unless_asked_for() -> None:
    assert Config().model.trust_remote_code is False
    assert app_request(Path("/m")).trust_remote_code is False
    from mergechat.cli.args import build_parser

    assert build_parser().parse_args(["/m", "--prompt", "x"]).trust_remote_code is False


def test_oneshot_refuses_a_folder_that_only_loads_by_running_its_code(
    foreign_arch: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, marker = foreign_arch
    code, out, err = ask_once(capsys, folder)
    assert not marker.exists()
    assert code == 2 and out == ""
    assert err.startswith("mergechat: error:") and says_it_ships_code(err), err
    assert "Traceback" not in err


def test_the_app_engine_refuses_it_too(foreign_arch: tuple[Path, Path]) -> None:
    folder, marker = foreign_arch
    event = load_through_engine(app_request(folder))
    assert not marker.exists()
    assert isinstance(event, LoadFailed) and event.exit_code == 2
    assert says_it_ships_code(f"{event.message} {event.hint}"), event


def test_doctor_reads_such_a_folder_without_running_it(
    foreign_arch: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, marker = foreign_arch
    code, out, err = run_cli(capsys, "doctor", str(folder))
    assert not marker.exists()
    assert code == 0 and "Traceback" not in out + err, err


def test_a_known_architecture_loads_with_the_builtin_code_not_the_folders(
    known_arch: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, marker = known_arch
    code, out, err = ask_once(capsys, folder)
    assert not marker.exists()
    assert code == 0 and out, err
    event = load_through_engine(app_request(folder))
    assert not marker.exists()
    assert isinstance(event, ModelLoaded), event
    code, out, err = run_cli(capsys, "doctor", str(folder))
    assert not marker.exists()
    assert code == 0, err


@pytest.mark.parametrize("kind", ["foreign_arch", "known_arch"])
def test_doctor_says_the_folder_ships_code(
    kind: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, marker = request.getfixturevalue(kind)
    code, out, err = run_cli(capsys, "doctor", str(folder))
    assert code == 0 and not marker.exists()
    assert says_it_ships_code(out + err), out


def test_a_known_architecture_with_code_says_its_code_was_not_run(
    known_arch: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, marker = known_arch
    code, _, err = ask_once(capsys, folder)
    assert code == 0 and not marker.exists()
    assert says_it_ships_code(err), err
    event = load_through_engine(app_request(folder))
    assert isinstance(event, ModelLoaded)
    assert says_it_ships_code(" ".join(event.warnings)), event.warnings


_TRUSTED_RUN = """
import json, sys
from pathlib import Path
from mergechat.cli.main import main
from mergechat.core.settings.config import load_config
from mergechat.ui.options import AppOptions
from mergechat.ui.start_config import effective_config, load_request
from mergechat.core.api import LoadFailed, ModelLoaded
from mergechat.core.engine.engine import Engine
import queue

flag_folder, flag_marker, config_marker = sys.argv[1:4]
code = main([flag_folder, "--prompt", "hi", "--max-new-tokens", "1", "--trust-remote-code"])
after_flag = Path(flag_marker).exists()
config, problems = load_config()
request = load_request(effective_config(config, AppOptions())[0])
events = queue.Queue()
engine = Engine(events.put)
engine.start()
engine.load(request)
while not isinstance(event := events.get(timeout=180), (ModelLoaded, LoadFailed)):
    pass
engine.shutdown(timeout=30)
print(json.dumps({"code": code, "after_flag": after_flag, "problems": problems,
                  "trusted": request.trust_remote_code, "event": type(event).__name__,
                  "after_config": Path(config_marker).exists()}))
"""


def test_with_the_flag_or_the_option_the_folders_code_does_run(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The control: the same folders do run their code when the user trusts them.

    In a child process, so the imported folder code and transformers' module cache stay out
    of this one (HF_MODULES_CACHE points into tmp_path).
    """
    flag_marker, config_marker = tmp_path / "marker-flag", tmp_path / "marker-config"
    flag_folder = make_code_folder(
        tiny_model_dir, tmp_path / "m" / "trusted-by-flag", flag_marker, model_type="evilmodel"
    )
    config_folder = make_code_folder(
        tiny_model_dir, tmp_path / "m" / "trusted-by-config", config_marker, model_type="llama"
    )
    config_file = locations.config_file()
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(
        f"[model]\npath = {toml_string(str(config_folder))}\ntrust_remote_code = true\n"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf-modules")}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _TRUSTED_RUN,
            str(flag_folder),
            str(flag_marker),
            str(config_marker),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["after_flag"] is True, (result, done.stderr[-2000:])
    assert result["code"] == 0, done.stderr[-2000:]
    assert result["problems"] == [] and result["trusted"] is True
    assert result["after_config"] is True, (result, done.stderr[-2000:])
    assert result["event"] == "ModelLoaded"


# -- other ways a model folder could run code ------------------------------------------------------


class _RunsAShell:
    """Unpickling this calls os.system: what a malicious pytorch_model.bin does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


def test_a_pickle_that_runs_code_is_refused_everywhere(
    tmp_path: Path, model_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from safetensors.torch import load_file

    marker = tmp_path / "marker-pickle"
    weights = dict(load_file(model_copy / "model.safetensors"))
    (model_copy / "model.safetensors").unlink()
    torch.save({**weights, "payload": _RunsAShell(marker)}, model_copy / "pytorch_model.bin")

    code, out, err = ask_once(capsys, model_copy)
    assert not marker.exists()
    assert code == 2 and out == "" and err.startswith("mergechat: error:"), err
    code, out, err = run_cli(capsys, "doctor", str(model_copy))
    assert not marker.exists()
    assert code in (0, 2) and "Traceback" not in out + err
    event = load_through_engine(app_request(model_copy))
    assert not marker.exists()
    assert isinstance(event, LoadFailed) and event.exit_code == 2, event


def test_a_chat_template_cannot_reach_python(
    tmp_path: Path, model_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Jinja chat templates run in transformers' sandbox: the classic escape is refused."""
    marker = tmp_path / "marker-template"
    for name in ("chat_template.jinja", "chat_template.json"):
        (model_copy / name).unlink(missing_ok=True)
    tok_config = json.loads((model_copy / "tokenizer_config.json").read_text())
    tok_config["chat_template"] = (
        "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}"
        "{{ self.__init__.__globals__.__builtins__.open('" + str(marker) + "', 'w') }}"
    )
    (model_copy / "tokenizer_config.json").write_text(json.dumps(tok_config))
    code, out, err = ask_once(capsys, model_copy)
    assert not marker.exists()
    assert code in (1, 2), (code, out, err)
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("mergechat: error:")]
    assert len(errors) == 1, err


# -- paths are data --------------------------------------------------------------------------------

#: Model paths that a shell, eval or format string would act on; {m} is the marker's path.
EVIL_PATHS = (
    "$(touch {m})",
    "`touch {m}`",
    "x; touch {m}",
    "x && touch {m} #",
    "x | touch {m}",
    "x\ntouch {m}",
    "~/$(touch {m})",
    "dir with spaces/$(touch {m})",
    "ünïcödé 東京 🙂/`touch {m}`",
    "'\"; touch {m}; echo \"'",
    "${{IFS}}touch${{IFS}}{m}",
    "%(x)s {{0}} __import__('os').system('touch {m}')",
    "-rf --trust-remote-code touch {m}",
    "\x1b]52;c;dG91Y2g=\x07 touch {m}",
)


def _evil(template: str, marker: Path) -> str:
    return template.format(m=marker)


def _named(message: str, path: str) -> bool:
    """The one-line message names the whole path (``~`` expanded): as it is, with its
    whitespace collapsed to single spaces, or with control characters escaped."""
    expected = os.path.expanduser(path)
    forms = {
        " ".join(expected.split()),
        escape_control(expected),
        expected.encode("unicode_escape").decode("ascii"),
    }
    text = " ".join(message.split())
    return any(form in text for form in forms)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run in an empty folder, so anything a command would create shows up there."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work
    assert list(work.iterdir()) == [], list(work.iterdir())


@pytest.mark.parametrize("template", EVIL_PATHS)
def test_a_model_path_on_the_command_line_is_data(
    template: str, tmp_path: Path, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    path = _evil(template, marker)
    # After `--` even a path that starts with "-" is a path.
    code, out, err = run_cli(capsys, "--prompt", "hi", "--", path)
    assert (code, out) == (2, ""), err
    assert err.startswith("mergechat: error:") and _named(err, path), err
    code, out, err = run_cli(capsys, "doctor", "--", path)
    assert code == 2 and err.startswith("mergechat: error:") and _named(err, path), err
    assert not marker.exists()


def test_a_model_path_from_the_config_file_is_data(tmp_path: Path, in_tmp: Path) -> None:
    """What the app does at start-up with ``[model] path``: the load fails naming the path."""
    from mergechat.core.engine.engine import Engine

    marker = tmp_path / "marker"
    config_file = locations.config_file()
    config_file.parent.mkdir(parents=True, exist_ok=True)
    events: queue.Queue[EngineEvent] = queue.Queue()
    engine = Engine(events.put)
    engine.start()
    try:
        for template in EVIL_PATHS:
            path = _evil(template, marker)
            config_file.write_text(f"[model]\npath = {toml_string(path)}\n", encoding="utf-8")
            request = app_request()
            assert str(request.path) == os.path.expanduser(path)
            engine.load(request)
            while not isinstance(event := events.get(timeout=60), ModelLoaded | LoadFailed):
                pass
            assert isinstance(event, LoadFailed) and event.exit_code == 2, event
            assert _named(event.message, path), (path, event.message)
    finally:
        engine.shutdown(timeout=30)
    assert not marker.exists()


def test_model_paths_from_the_history_are_data(
    tmp_path: Path, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    paths = [_evil(t, marker) for t in EVIL_PATHS]
    with HistoryStore.open() as store:
        ids = []
        for path in paths:
            conv = store.new_conversation(path)
            store.add_message(conv, "user", f"prompt for {path}")
            ids.append(conv)
            assert store.last_conversation_for_model(path) == conv
    code, out, err = run_cli(capsys, "history", "list")
    assert code == 0, err
    # One line per conversation: a newline or escape in a path cannot break the table.
    assert len(out.splitlines()) == len(paths) + 1
    assert "\x1b" not in out and "\x07" not in out
    exports = tmp_path / "exports"
    exports.mkdir()
    for conv, path in zip(ids, paths, strict=True):
        stored = model_key(path)
        code, out, err = run_cli(capsys, "history", "show", str(conv))
        assert code == 0 and "\x1b" not in out, err
        assert escape_control(stored) in out
        code, out, err = run_cli(
            capsys, "history", "export", str(conv), "--format", "json", "-o", "-"
        )
        assert code == 0, err
        assert json.loads(out)["conversation"]["model_path"] == stored
        code, out, err = run_cli(capsys, "history", "export", str(conv), "-o", str(exports))
        assert code == 0, err
    assert len(list(exports.iterdir())) == len(paths)
    assert not marker.exists()


def test_the_source_runs_no_shell_and_evaluates_nothing() -> None:
    """A static check of src/mergechat: no eval/exec, no shell, no unpickling, argv lists only."""
    forbidden_calls = {"eval", "exec", "__import__", "compile", "execfile"}
    forbidden_attrs = {
        ("os", "system"),
        ("os", "popen"),
        ("pickle", "load"),
        ("pickle", "loads"),
        ("marshal", "loads"),
        ("shlex", "split"),
    }
    found: list[str] = []
    subprocess_users: set[str] = set()
    for file in sorted(SRC.rglob("*.py")):
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        name = str(file.relative_to(SRC))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            where = f"{name}:{node.lineno}"
            if isinstance(func, ast.Name) and func.id in forbidden_calls:
                found.append(f"{where} calls {func.id}()")
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                owner, attr = func.value.id, func.attr
                if (owner, attr) in forbidden_attrs or (
                    owner == "os" and attr.startswith(("exec", "spawn"))
                ):
                    found.append(f"{where} calls {owner}.{attr}()")
                if owner == "torch" and attr == "load":
                    safe = any(
                        k.arg == "weights_only"
                        and isinstance(k.value, ast.Constant)
                        and k.value.value is True
                        for k in node.keywords
                    )
                    if not safe:
                        found.append(f"{where} calls torch.load without weights_only=True")
                if owner == "subprocess":
                    subprocess_users.add(name)
                    for keyword in node.keywords:
                        if keyword.arg == "shell" and not (
                            isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                        ):
                            found.append(f"{where} runs a shell")
                    if node.args and isinstance(node.args[0], ast.Constant | ast.JoinedStr):
                        found.append(f"{where} gives subprocess a command string")
    assert found == []
    # The only child processes: pip (fetching the demo wheel), the GGUF converter, the app's
    # engine process (this Python running a fixed module, its pipes' numbers and the probe
    # cache path as argv) and the engine's server under `mergechat serve`, each with an argv
    # list built from fixed words, paths and checked numbers. A new one needs the same review.
    assert subprocess_users == {
        "core/model/demo_fetch.py",
        "core/engine/child.py",
        "core/engine/gguf_convert.py",
        "cli/serve.py",
    }


# -- user-only files -------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o000, 0o022], ids=["umask000", "umask022"])
def permissive_umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_config_history_and_cache_are_private_under_any_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, permissive_umask: int
) -> None:
    from mergechat.core.detect.probe_cache import write_entries

    # Nothing exists yet: the folders are made below a parent that is not mergechat's.
    base = tmp_path / "home"
    monkeypatch.setenv(locations.ENV_CONFIG_DIR, str(base / "config" / "mergechat"))
    monkeypatch.setenv(locations.ENV_DATA_DIR, str(base / "share" / "mergechat"))
    monkeypatch.setenv(locations.ENV_CACHE_DIR, str(base / "cache" / "mergechat"))

    written = save_config(Config())
    assert written == locations.config_file()
    assert _mode(written) == 0o600 and _mode(written.parent) == 0o700

    with HistoryStore.open() as store:
        conv = store.new_conversation("/m")
        store.add_message(conv, "user", "a private prompt")
        db = store.path
        files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
        assert all(f.exists() for f in files), list(db.parent.iterdir())
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
    assert _mode(locations.data_dir()) == 0o700

    write_entries(locations.probe_cache_file(), {})
    assert _mode(locations.probe_cache_file()) == 0o600
    # A folder inside the cache dir made first (the demo model's) still leaves it private.
    nested = locations.ensure_private_dir(locations.cache_dir() / "demo" / "converted")
    for folder in (locations.cache_dir(), nested.parent, nested):
        assert _mode(folder) == 0o700, folder
    # Parents that are not mergechat's keep the usual mode (mkdir -p), whatever it is.
    assert (base / "cache").is_dir()


def test_wider_existing_files_are_never_widened(tmp_path: Path, permissive_umask: int) -> None:
    """A config file the user made 0644 stays readable until mergechat saves it, then it is
    0600; a folder the user made keeps its mode; an existing database keeps its mode."""
    config_dir = locations.config_dir()
    config_dir.mkdir(parents=True)
    os.chmod(config_dir, 0o755)
    path = locations.config_file()
    path.write_text('[ui]\ntheme = "mergechat-light"\n')
    os.chmod(path, 0o644)
    config, problems = load_config()
    assert problems == [] and _mode(path) == 0o644  # reading changes nothing
    save_config(replace(config, theme="mergechat-contrast"))  # a save writes only a change
    assert _mode(path) == 0o600 and _mode(config_dir) == 0o755
    assert load_config()[0].theme == "mergechat-contrast"

    data = locations.data_dir()
    data.mkdir(parents=True)
    db = data / "history.sqlite3"
    db.touch()
    os.chmod(db, 0o640)
    with HistoryStore.open() as store:
        store.add_message(store.new_conversation("/m"), "user", "hello")
    assert _mode(db) == 0o640


def test_env_dirs_with_an_unknown_user_are_paths_not_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(locations.ENV_DATA_DIR, "~no-such-user-here/data")
    assert locations.data_dir() == Path("~no-such-user-here/data")


def test_trusted_run_script_is_valid_python() -> None:
    # The child script above is a string: make sure a typo fails here, not as an odd rc.
    ast.parse(textwrap.dedent(_TRUSTED_RUN))
