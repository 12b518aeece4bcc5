#!/usr/bin/env python3
"""Set up a local virtual environment and run mergechat or its tests: needs only Python 3.10+.

    python3 tools/bootstrap.py demo        # install, then open the app on the demo model
    python3 tools/bootstrap.py test [ARGS] # install (dev extra), lint-imports, then pytest [ARGS]
    python3 tools/bootstrap.py install     # install with the dev extra only

torch is installed first, pinned. On Linux without an NVIDIA GPU the CPU-only build is taken from
PyTorch's CPU wheel index (PyPI's Linux build bundles CUDA, several GB); with an NVIDIA GPU, or on
macOS and Windows, PyPI's build. Choose another build with MERGECHAT_TORCH (any pip requirement
arguments), e.g. MERGECHAT_TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124".
MERGECHAT_VENV chooses the environment's folder (default: .venv beside pyproject.toml).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH_VERSION = "2.13.0"
DEFAULT_TORCH = f"torch=={TORCH_VERSION}"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class TorchChoice:
    """The pip arguments that install torch (empty: nothing to install) and why, for the user."""

    args: tuple[str, ...]
    reason: str
    #: What to install when ``args`` fails (the CPU index unreachable): empty for no second try.
    fallback: tuple[str, ...] = ()


def choose_torch(
    *,
    override: str | None,
    installed: str | None,
    system: str,
    nvidia: bool,
    cpu_index_reachable: bool,
) -> TorchChoice:
    """Decide how torch is installed: a pure function of what was found, so it can be tested.

    ``installed`` is the torch version already in the venv (None: none); ``system`` is
    ``platform.system()``'s answer.
    """
    if override:
        return TorchChoice(tuple(shlex.split(override)), "MERGECHAT_TORCH chooses the torch build")
    if installed is not None and installed.split("+")[0] == TORCH_VERSION:
        return TorchChoice((), f"torch {installed} is already installed")
    plain = (DEFAULT_TORCH,)
    if system != "Linux":
        return TorchChoice(plain, f"PyPI's torch {TORCH_VERSION} (on {system} it has no CUDA)")
    if nvidia:
        return TorchChoice(plain, f"an NVIDIA GPU is present: PyPI's torch {TORCH_VERSION} (CUDA)")
    if not cpu_index_reachable:
        return TorchChoice(
            plain,
            f"no NVIDIA GPU, but {CPU_INDEX} cannot be reached: torch {TORCH_VERSION} from the "
            "configured package index (from PyPI that is the CUDA build, several GB; set "
            "MERGECHAT_TORCH to choose)",
        )
    cpu = (f"{DEFAULT_TORCH}+cpu", "--extra-index-url", CPU_INDEX)
    return TorchChoice(
        cpu, f"no NVIDIA GPU: the CPU-only torch {TORCH_VERSION} from {CPU_INDEX}", plain
    )


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver is present (``nvidia-smi`` on PATH or ``/proc/driver/nvidia``)."""
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia").exists()


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except (OSError, ValueError):
        return False


def _installed_torch(python: Path) -> str | None:
    code = "import importlib.metadata as m; print(m.version('torch'))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    version = done.stdout.strip()
    return version if done.returncode == 0 and version else None


def _venv() -> Path:
    return Path(os.environ.get("MERGECHAT_VENV", ROOT / ".venv")).resolve()


def _bin(name: str) -> Path:
    folder = "Scripts" if os.name == "nt" else "bin"
    return _venv() / folder / name


def _step(text: str) -> None:
    print(f"bootstrap: {text}", flush=True)


def _run(*cmd: str | Path, env: dict[str, str] | None = None, check: bool = True) -> int:
    print("+", " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], check=check, cwd=ROOT, env=env).returncode


def _install_torch(python: Path) -> None:
    import platform

    choice = choose_torch(
        override=os.environ.get("MERGECHAT_TORCH"),
        installed=_installed_torch(python),
        system=platform.system(),
        nvidia=has_nvidia_gpu(),
        cpu_index_reachable=_reachable(CPU_INDEX + "/"),
    )
    _step(f"torch: {choice.reason}")
    if not choice.args:
        return
    _step("installing torch (a large download the first time; pip shows its progress)")
    pip = (python, "-m", "pip", "install", "--progress-bar", "on")
    if _run(*pip, *choice.args, check=False) == 0:
        return
    if not choice.fallback:
        sys.exit("bootstrap: installing torch failed (pip's output above says why)")
    _step(f"that failed; installing {' '.join(choice.fallback)} from the configured index instead")
    _run(*pip, *choice.fallback)


def install(extra: str | None) -> None:
    """Create the venv if needed and install torch (pinned) and mergechat into it."""
    if sys.version_info < (3, 10):  # noqa: UP036 - this script may run under any python3
        sys.exit("mergechat needs Python 3.10 or newer")
    python = _bin("python")
    if not python.exists():
        _step(f"creating the virtual environment {_venv()}")
        _run(sys.executable, "-m", "venv", _venv())
        _step("upgrading pip")
        _run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    _install_torch(python)
    target = f".[{extra}]" if extra else "."
    _step(f"installing mergechat and its dependencies ({target}); pip lists each package")
    _run(python, "-m", "pip", "install", "--progress-bar", "on", "-e", target)
    _step("installed")


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("test", [])
    if command == "install":
        install("dev")
        return 0
    if command == "test":
        install("dev")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        _step("checking the architecture contracts (lint-imports, pyproject.toml)")
        contracts = subprocess.run([str(_bin("lint-imports"))], cwd=ROOT, env=env).returncode
        if contracts != 0:
            return contracts
        pytest = [str(_bin("python")), "-m", "pytest", *rest]
        return subprocess.run(pytest, cwd=ROOT, env=env).returncode
    if command == "demo":
        install(None)
        return subprocess.run([str(_bin("mergechat")), "--demo", *rest], cwd=ROOT).returncode
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
