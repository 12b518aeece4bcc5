"""The one atomic writer behind config.toml, the state file and the JSON caches."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mergechat.core.settings import json_cache
from mergechat.core.settings.atomic import atomic_write


def test_a_write_is_user_only_and_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old")
    path.chmod(0o644)
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("kept")

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", refuse)
    with pytest.raises(OSError, match="No space"):
        atomic_write(path, b"lost")
    assert path.read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_json_caches_use_it(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "probes.json"
    json_cache.write_entries(path, 3, {"k": 1})
    assert json_cache.read_entries(path, 3) == {"k": 1}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json_cache.read_entries(path, 4) == {}
