"""config.toml: defaults, round trip, per-key validation with file/line/key/reason, safe writes."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.fuzz import fuzz_settings
from fixtures.toml_read import tomllib
from mergechat.core.errors import MergechatError
from mergechat.core.settings import locations
from mergechat.core.settings.config import (
    MAX_RECENT_MODELS,
    Config,
    HistoryConfig,
    ModelConfig,
    config_text,
    load_config,
    parse_generation_field,
    remember_model,
    save_config,
)
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.settings.toml_text import toml_key, toml_string, toml_value


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_missing_file_gives_the_defaults_silently(tmp_path: Path) -> None:
    assert load_config(tmp_path / "nope.toml") == (Config(), [])
    config = Config()
    assert config.model == ModelConfig(path="", device="auto", dtype="auto")
    assert config.generation == GenerationSettings()
    assert (config.theme, config.recent_models, config.keymap) == ("mergechat-dark", [], {})
    assert config.history == HistoryConfig(enabled=True, resume_last=True)


def test_the_default_path_and_the_env_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = locations.config_file()
    assert default == Path(os.environ["MERGECHAT_CONFIG_DIR"]) / "config.toml"
    write(default, '[ui]\ntheme = "from-dir"\n')
    assert load_config()[0].theme == "from-dir"
    override = write(tmp_path / "elsewhere.toml", '[ui]\ntheme = "from-env"\n')
    monkeypatch.setenv("MERGECHAT_CONFIG", str(override))
    assert load_config()[0].theme == "from-env"
    save_config(Config(theme="saved"))
    assert "saved" in override.read_text()


FULL = Config(
    model=ModelConfig(path="/m/merged", device="cuda:1", dtype="bfloat16", trust_remote_code=True),
    generation=GenerationSettings(
        temperature=0.7,
        top_p=0.95,
        top_k=40,
        max_new_tokens=2048,
        repetition_penalty=1.1,
        seed=1234,
        system_prompt='Say "hi".\n\tTabs, back\\slashes, \x00 nul, \x7f del, é, 😀',
    ),
    theme="mergechat-contrast",
    keymap={"precision": "ctrl+t,f3", "app.quit": "ctrl+q", "new_chat": "ctrl+n"},
    history=HistoryConfig(enabled=False, resume_last=False),
)


def test_round_trip_of_every_field(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    assert save_config(FULL, path) == path
    assert load_config(path) == (FULL, [])


def test_round_trip_keeps_unset_values_unset(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    save_config(Config(), path)
    text = path.read_text()
    assert "# temperature = ..." in text  # unset keys are written as comments
    assert load_config(path) == (Config(), [])


def test_written_file_is_private_and_the_folder_too(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "config.toml"
    save_config(FULL, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # An existing, more open file is replaced by a private one; no temp file is left behind.
    path.chmod(0o644)
    save_config(Config(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The previous file is kept beside it, private too; no temp file is left behind.
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml", "config.toml.bak"]
    assert stat.S_IMODE((path.parent / "config.toml.bak").stat().st_mode) == 0o600


def test_saving_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = write(tmp_path / "dotfiles" / "mergechat.toml", "")
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    save_config(FULL, link)
    assert link.is_symlink() and load_config(real) == (FULL, [])


def test_a_write_failure_is_a_clear_error(tmp_path: Path) -> None:
    blocker = write(tmp_path / "file", "x")
    with pytest.raises(MergechatError, match="cannot save settings to"):
        save_config(Config(), blocker / "config.toml")


NUMBER = "must be a number"


@pytest.mark.parametrize(
    ("table", "line", "reason", "shown"),
    [
        ("generation", 'temperature = "hot"', f"{NUMBER} >= 0", '"hot"'),
        ("generation", "temperature = -1", f"{NUMBER} >= 0", "-1"),
        ("generation", "temperature = nan", f"{NUMBER} >= 0", "nan"),
        ("generation", "temperature = true", NUMBER, "true"),
        ("generation", "top_p = 1.5", f"{NUMBER} > 0 and <= 1", "1.5"),
        ("generation", "top_p = 0", f"{NUMBER} > 0 and <= 1", "0"),
        ("generation", "top_k = 2.5", "must be an integer >= 0", "2.5"),
        ("generation", "top_k = -3", "must be an integer >= 0", "-3"),
        ("generation", "max_new_tokens = 0", "must be an integer >= 1", "0"),
        ("generation", "repetition_penalty = 0", f"{NUMBER} > 0", "0"),
        ("generation", "seed = 4294967296", "must be an integer from 0", "4294967296"),
        ("generation", "system_prompt = 3", "must be a string", "3"),
        ("model", "path = [1]", "must be a string", "an array"),
        ("model", 'device = "gpu"', "must be auto, cpu, cuda, cuda:N", '"gpu"'),
        ("model", 'dtype = "int8"', "must be auto, float32, bfloat16 or float16", '"int8"'),
        ("model", 'trust_remote_code = "yes"', "must be true or false", '"yes"'),
        ("ui", 'theme = "two words"', "must be a theme name", '"two words"'),
        ("ui", 'recent_models = "/m"', "must be an array of strings", '"/m"'),
        ("ui", "recent_models = [1]", "items must be paths", "1"),
        ("keymap", 'quit = ""', "must be key names separated by commas", '""'),
        ("keymap", "quit = 5", "must be key names separated by commas", "5"),
        ("history", 'enabled = "no"', "must be true or false", '"no"'),
        ("history", "resume_last = 0", "must be true or false", "0"),
        ("", 'model = "x"', "must be a table", '"x"'),
        ("", "history = 1", "must be a table", "1"),
    ],
)
def test_each_invalid_value_falls_back_and_names_file_line_key_and_reason(
    tmp_path: Path, table: str, line: str, reason: str, shown: str
) -> None:
    header = f"[{table}]\n" if table else ""
    path = write(tmp_path / "config.toml", f"# comment\n{header}{line}\n")
    config, problems = load_config(path)
    assert config == Config()
    assert len(problems) == 1, problems
    problem = problems[0]
    key = line.split(" =")[0]
    dotted, number = (f"{table}.{key}", 3) if table else (key, 2)
    assert problem.startswith(f"{path}:{number}: {dotted}: {reason}"), problem
    assert f"got {shown};" in problem
    assert problem.endswith(
        ("using the default", "using the defaults", "ignored", "skipped", "keys")
    )


def test_the_documented_message_shape(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[generation]\ntemperature = "hot"\ntop_k = 5\n')
    config, problems = load_config(path)
    assert problems == [
        f'{path}:2: generation.temperature: must be a number >= 0, got "hot"; using the default'
    ]
    # The other keys of the table still apply.
    assert config.generation == GenerationSettings(top_k=5)


def test_good_values_are_normalised(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.toml",
        '[model]\ndevice = " CUDA:0 "\ndtype = "bf16"\n[generation]\ntemperature = 1\n'
        '[keymap]\nprecision = " ctrl+t , f3 "\napp.quit = "ctrl+q"\n',
    )
    config, problems = load_config(path)
    assert problems == []
    assert (config.model.device, config.model.dtype) == ("cuda:0", "bfloat16")
    assert config.generation.temperature == 1.0 and isinstance(config.generation.temperature, float)
    assert config.keymap == {"precision": "ctrl+t,f3", "app.quit": "ctrl+q"}


def test_invalid_toml_gives_the_defaults_and_one_problem_with_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[model]\npath = "/m"\n[generation\n')
    config, problems = load_config(path)
    assert config == Config()
    assert len(problems) == 1
    assert (
        problems[0].startswith(f"{path}:3: invalid TOML:") and "using the defaults" in problems[0]
    )


def test_unreadable_content_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[model]")
    assert load_config(binary) == (Config(), [f"{binary}: not UTF-8 text; using the defaults"])
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    config, problems = load_config(folder)
    assert config == Config() and "cannot read it" in problems[0]


def test_the_history_table_round_trips_each_value(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "[history]\nresume_last = false\n")
    config, problems = load_config(path)
    assert problems == []
    assert config.history == HistoryConfig(enabled=True, resume_last=False)
    for history in (HistoryConfig(False, True), HistoryConfig(True, False), HistoryConfig()):
        save_config(Config(history=history), path)
        assert "[history]" in path.read_text()
        assert load_config(path) == (Config(history=history), [])


def test_unknown_keys_and_tables_are_reported_and_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.toml",
        '[model]\npath = "/m"\ncolour = "red"\n[generation]\ntemprature = 0.5\n[extras]\nx = 1\n'
        "[history]\nsave = true\n",
    )
    config, problems = load_config(path)
    assert config.model.path == "/m" and config.generation == GenerationSettings()
    assert sorted(problems) == sorted(
        [
            f"{path}:6: unknown key 'extras'; ignored",
            f"{path}:3: unknown key 'model.colour'; ignored",
            f"{path}:5: unknown key 'generation.temprature'; ignored",
            f"{path}:9: unknown key 'history.save'; ignored",
        ]
    )


def test_recent_models_are_deduplicated_and_capped(tmp_path: Path) -> None:
    many = ", ".join(f'"/m/{i}"' for i in range(15))
    path = write(tmp_path / "config.toml", f'[ui]\nrecent_models = ["/m/0/", {many}]\n')
    config, problems = load_config(path)
    assert problems == []
    assert config.recent_models == ["/m/0/"] + [f"/m/{i}" for i in range(1, 10)]


def test_remember_model_puts_the_newest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config(recent_models=[f"/m/{i}" for i in range(MAX_RECENT_MODELS)])
    updated = remember_model(config, "/m/5/")
    assert updated.recent_models[:2] == ["/m/5", "/m/0"]
    assert len(updated.recent_models) == MAX_RECENT_MODELS
    assert config.recent_models[0] == "/m/0"  # the original is untouched
    fresh = remember_model(updated, "relative-model")
    assert fresh.recent_models[0] == str(tmp_path / "relative-model")
    assert len(fresh.recent_models) == MAX_RECENT_MODELS and "/m/9" not in fresh.recent_models
    assert remember_model(config, "") is config


def test_values_are_data_never_code(tmp_path: Path) -> None:
    evil = '__import__("os").system("touch pwned")'
    config = Config(model=ModelConfig(path=evil), generation=GenerationSettings(system_prompt=evil))
    path = tmp_path / "config.toml"
    save_config(config, path)
    assert load_config(path) == (config, [])
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("temperature", "0.7", 0.7),
        ("temperature", "", None),
        ("top_k", " 40 ", 40),
        ("max_new_tokens", "1_000", 1000),
        ("seed", "0", 0),
        ("system_prompt", "  keep spaces ", "  keep spaces "),
    ],
)
def test_parse_generation_field_accepts(name: str, text: str, value: object) -> None:
    assert parse_generation_field(name, text) == value


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("temperature", "hot", "must be a number >= 0"),
        ("temperature", "inf", "must be a number >= 0"),
        ("top_p", "2", "must be a number > 0 and <= 1"),
        ("top_k", "1.5", "must be an integer >= 0"),
        ("max_new_tokens", "", "must be an integer >= 1"),
        ("seed", "-1", "must be an integer from 0 to 4294967295"),
    ],
)
def test_parse_generation_field_rejects_with_the_config_reason(
    name: str, text: str, reason: str
) -> None:
    with pytest.raises(ValueError, match=f"^{reason}$"):
        parse_generation_field(name, text)


def test_config_text_quotes_keys_that_are_not_bare() -> None:
    text = config_text(Config(keymap={"app.quit": "ctrl+q", "plain": "f5"}))
    assert '"app.quit" = "ctrl+q"' in text and 'plain = "f5"' in text


_TOML_ISH = st.text(
    alphabet=st.sampled_from(
        [*"[]{}=\"'\\#.,-_+ \n\t\r0123456789abcdefmodelgenrationuikeyptsx", "\x00", "é", "\ud800"]
    ),
    max_size=200,
)


@fuzz_settings(300)
@given(body=_TOML_ISH)
def test_fuzz_arbitrary_text_never_raises(tmp_path: Path, body: str) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(body.encode("utf-8", "surrogatepass"))
    config, problems = load_config(path)
    assert isinstance(config, Config) and all(isinstance(p, str) for p in problems)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "model": st.dictionaries(
                st.sampled_from(["path", "device", "dtype", "trust_remote_code", "x"]),
                st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.floats()),
            ),
            "generation": st.dictionaries(
                st.sampled_from(["temperature", "top_p", "top_k", "seed", "max_new_tokens", "y"]),
                st.one_of(st.integers(), st.floats(), st.text(max_size=4), st.booleans()),
            ),
            "keymap": st.dictionaries(st.text(max_size=6), st.text(max_size=10), max_size=3),
            "history": st.dictionaries(
                st.sampled_from(["enabled", "resume_last", "z"]),
                st.one_of(st.booleans(), st.integers(), st.text(max_size=3)),
            ),
        },
    )
)
def test_fuzz_valid_toml_with_random_values_never_raises_and_round_trips(
    tmp_path: Path, body: dict[str, dict[str, object]]
) -> None:
    import json

    lines = []
    for table, values in body.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            rendered = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
            if isinstance(value, float) and value != value:
                rendered = "nan"
            elif isinstance(value, float) and value in (float("inf"), float("-inf")):
                rendered = "inf" if value > 0 else "-inf"
            lines.append(f"{json.dumps(key)} = {rendered}")
    path = tmp_path / "random.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config, _ = load_config(path)
    # Whatever survived validation is written and read back unchanged, with no new problems.
    out = tmp_path / "out.toml"
    save_config(config, out)
    assert load_config(out) == (replace(config, recent_models=[]), [])


@pytest.mark.parametrize(
    "text", ["plain", 'q"uote', "back\\slash", "\x00\x01\x1f\x7f", "tab\tnew\nline\r", "é 😀", ""]
)
def test_toml_strings_read_back_exactly(text: str) -> None:
    assert tomllib.loads(f"v = {toml_string(text)}")["v"] == text


def test_toml_writer_edge_cases() -> None:
    assert toml_string("a\ud800b") == '"a\ufffdb"'  # a lone surrogate cannot be written
    assert tomllib.loads(f"v = {toml_value([1, 2.5, True, 'x'])}")["v"] == [1, 2.5, True, "x"]
    assert toml_key("app.quit") == '"app.quit"' and toml_key("quit") == "quit"
    with pytest.raises(TypeError):
        toml_value(object())
