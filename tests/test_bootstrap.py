"""tools/bootstrap.py's choice of torch build: CPU wheels where no NVIDIA GPU is present."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bootstrap() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bootstrap", ROOT / "tools" / "bootstrap.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bootstrap"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


boot = _bootstrap()
PIN = f"torch=={boot.TORCH_VERSION}"


def choose(**kwargs: object) -> object:
    found: dict[str, object] = {
        "override": None,
        "installed": None,
        "system": "Linux",
        "nvidia": False,
        "cpu_index_reachable": True,
    }
    return boot.choose_torch(**{**found, **kwargs})


def test_linux_without_nvidia_takes_the_cpu_build_and_can_fall_back() -> None:
    choice = choose()
    assert choice.args == (f"{PIN}+cpu", "--extra-index-url", boot.CPU_INDEX)
    assert choice.fallback == (PIN,)
    assert "no NVIDIA GPU" in choice.reason and "CPU-only" in choice.reason


def test_linux_with_nvidia_takes_pypis_build() -> None:
    choice = choose(nvidia=True)
    assert choice.args == (PIN,) and "NVIDIA GPU is present" in choice.reason


@pytest.mark.parametrize("system", ["Darwin", "Windows"])
def test_other_systems_take_pypis_build(system: str) -> None:
    choice = choose(system=system)
    assert choice.args == (PIN,) and system in choice.reason


def test_an_unreachable_cpu_index_says_what_happens_instead() -> None:
    choice = choose(cpu_index_reachable=False)
    assert choice.args == (PIN,) and choice.fallback == ()
    assert "cannot be reached" in choice.reason and "MERGECHAT_TORCH" in choice.reason


def test_the_pinned_version_already_installed_is_kept() -> None:
    choice = choose(installed=f"{boot.TORCH_VERSION}+cpu")
    assert choice.args == () and "already installed" in choice.reason
    # Another version is replaced by the pin.
    assert choose(installed="2.2.0").args[0] == f"{PIN}+cpu"


def test_mergechat_torch_overrides_everything() -> None:
    spec = "torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"
    choice = choose(override=spec, installed=boot.TORCH_VERSION, nvidia=True)
    assert choice.args == ("torch==2.5.1", "--index-url", "https://download.pytorch.org/whl/cu124")
    assert "MERGECHAT_TORCH" in choice.reason


def test_nvidia_detection_looks_at_path_and_the_driver(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(boot, "Path", lambda _p: tmp_path / "no-driver")
    assert boot.has_nvidia_gpu() is False
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n")
    smi.chmod(0o755)
    assert boot.has_nvidia_gpu() is True
