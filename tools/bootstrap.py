#!/usr/bin/env python3
"""Set up a local virtual environment and run mergechat or its tests: needs only Python 3.10+.

    python3 tools/bootstrap.py demo        # install, then open the app on the demo model
    python3 tools/bootstrap.py test [ARGS] # install with the dev extra, then run pytest [ARGS]
    python3 tools/bootstrap.py install     # install with the dev extra only

torch is installed first, pinned, so pip does not pull a multi-GB CUDA build; choose another
build with MERGECHAT_TORCH (any pip requirement arguments), e.g.
MERGECHAT_TORCH="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124".
MERGECHAT_VENV chooses the environment's folder (default: .venv beside pyproject.toml).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TORCH = "torch==2.13.0"


def _venv() -> Path:
    return Path(os.environ.get("MERGECHAT_VENV", ROOT / ".venv")).resolve()


def _bin(name: str) -> Path:
    folder = "Scripts" if os.name == "nt" else "bin"
    return _venv() / folder / name


def _run(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, env=env)


def install(extra: str | None) -> None:
    """Create the venv if needed and install torch (pinned) and mergechat into it."""
    if sys.version_info < (3, 10):  # noqa: UP036 - this script may run under any python3
        sys.exit("mergechat needs Python 3.10 or newer")
    python = _bin("python")
    if not python.exists():
        _run(sys.executable, "-m", "venv", _venv())
        _run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    torch_spec = shlex.split(os.environ.get("MERGECHAT_TORCH", DEFAULT_TORCH))
    _run(python, "-m", "pip", "install", "--quiet", *torch_spec)
    target = f".[{extra}]" if extra else "."
    _run(python, "-m", "pip", "install", "--quiet", "-e", target)


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("test", [])
    if command == "install":
        install("dev")
        return 0
    if command == "test":
        install("dev")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        pytest = [str(_bin("python")), "-m", "pytest", *rest]
        return subprocess.run(pytest, cwd=ROOT, env=env).returncode
    if command == "demo":
        install(None)
        return subprocess.run([str(_bin("mergechat")), "--demo", *rest], cwd=ROOT).returncode
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
