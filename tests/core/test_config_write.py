"""Saving settings keeps the user's file: comments, unknown keys and values it could not read stay,
a file that does not parse is never replaced, the old file is kept as config.toml.bak, and a model
load writes the recent models to the state file, never to config.toml."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from mergechat.core.errors import MergechatError
from mergechat.core.settings import locations, recent_models
from mergechat.core.settings.config import Config, load_config, save_config
from mergechat.core.settings.generation import GenerationSettings

HAND_WRITTEN = """\
# my settings, keep this comment
[model]
path = "/models/mine"  # the one I use

[generation]
temperature = 0.9
top_k = "many"   # invalid: reported, but it is mine to fix

[plugins]   # not mergechat's: kept
colour = "teal"
"""


def test_a_save_writes_only_what_changed_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(HAND_WRITTEN, encoding="utf-8")
    loaded, problems = load_config(path)
    assert any("generation.top_k" in p for p in problems)
    changed = replace(loaded, generation=replace(loaded.generation, temperature=0.2, seed=7))
    save_config(changed, path, previous=loaded)
    text = path.read_text(encoding="utf-8")
    for kept in (
        "# my settings, keep this comment",
        '"/models/mine"  # the one I use',
        'top_k = "many"   # invalid: reported, but it is mine to fix',
        '[plugins]   # not mergechat\'s: kept\ncolour = "teal"',
    ):
        assert kept in text
    assert "temperature = 0.2" in text and "seed = 7" in text
    assert load_config(path)[0].generation.temperature == 0.2
    backup = tmp_path / "config.toml.bak"
    assert backup.read_text(encoding="utf-8") == HAND_WRITTEN
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600


def test_a_value_set_back_to_the_models_default_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(HAND_WRITTEN, encoding="utf-8")
    loaded, _ = load_config(path)
    cleared = replace(loaded, generation=replace(loaded.generation, temperature=None))
    save_config(cleared, path, previous=loaded)
    assert "temperature" not in path.read_text(encoding="utf-8")
    assert "[plugins]" in path.read_text(encoding="utf-8")


def test_without_previous_the_file_itself_is_the_starting_point(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(HAND_WRITTEN, encoding="utf-8")
    loaded, _ = load_config(path)
    save_config(replace(loaded, theme="mergechat-light"), path)
    text = path.read_text(encoding="utf-8")
    assert 'theme = "mergechat-light"' in text and 'top_k = "many"' in text
    assert "max_new_tokens" not in text  # unchanged values are not added


def test_nothing_changed_means_nothing_written(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(HAND_WRITTEN, encoding="utf-8")
    loaded, _ = load_config(path)
    save_config(loaded, path, previous=loaded)
    assert path.read_text(encoding="utf-8") == HAND_WRITTEN
    assert not (tmp_path / "config.toml.bak").exists()


@pytest.mark.parametrize(
    "raw",
    [
        b'[generation]\ntemperature = 0.7\nsystem_prompt = "unclosed\n',
        b"[model]\npath = '\xff\xfe'\n",
    ],
    ids=["syntax error", "not UTF-8"],
)
def test_a_file_that_does_not_parse_is_never_replaced(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(raw)
    config, problems = load_config(path)
    assert config == Config() and "using the defaults" in problems[0]
    with pytest.raises(MergechatError, match=r"settings not saved: .* was not changed because"):
        save_config(Config(generation=GenerationSettings(temperature=0.1)), path)
    assert path.read_bytes() == raw
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_keymap_entries_are_added_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[keymap]\nquit = "ctrl+x"\n# a note\n', encoding="utf-8")
    loaded, _ = load_config(path)
    save_config(replace(loaded, keymap={"app.send": "f9"}), path, previous=loaded)
    text = path.read_text(encoding="utf-8")
    assert "quit" not in text and '"app.send" = "f9"' in text and "# a note" in text
    assert load_config(path)[0].keymap == {"app.send": "f9"}


def test_remembering_a_model_writes_the_state_file_not_the_config(tmp_path: Path) -> None:
    config_file = locations.config_file()
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(HAND_WRITTEN, encoding="utf-8")
    recent = recent_models.remember(["/m/a", "/m/b"], "/m/b/")
    assert recent == ["/m/b", "/m/a"]
    assert config_file.read_text(encoding="utf-8") == HAND_WRITTEN
    state = locations.state_file()
    assert json.loads(state.read_text(encoding="utf-8")) == {"recent_models": ["/m/b", "/m/a"]}
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert recent_models.load_recent(["/legacy"]) == ["/m/b", "/m/a"]


def test_recent_models_fall_back_to_an_older_configs_list(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    assert recent_models.load_recent(["/old/a"], state) == ["/old/a"]
    state.write_text("{not json", encoding="utf-8")
    assert recent_models.load_recent(["/old/a"], state) == []
    state.write_text(json.dumps({"recent_models": ["/a", "/a/", 3, "", *"bcdefghijkl"]}))
    assert recent_models.load_recent([], state) == ["/a", *"bcdefghij"]


def test_a_read_only_state_folder_keeps_the_list_for_the_session(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert recent_models.remember([], "/m/a", blocker / "state.json") == ["/m/a"]
