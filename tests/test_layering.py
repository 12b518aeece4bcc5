"""The two walls at run time: importing the core loads no Textual; importing the UI loads no torch.

Which module may import which is checked statically by import-linter (pyproject.toml's
`[tool.importlinter]`, run by `tools/bootstrap.py test`); these tests check what really gets loaded,
including the imports of the libraries we use.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mergechat"
HEAVY = ("torch", "transformers", "accelerate")


def _modules(package: str) -> list[str]:
    root = SRC / package
    names = []
    for file in sorted(root.rglob("*.py")):
        rel = file.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def _imported_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(out.stdout.split())


def test_core_imports_no_textual() -> None:
    loaded = _imported_after(_modules("core"))
    assert "textual" not in loaded


def test_importing_the_whole_ui_loads_no_torch() -> None:
    loaded = _imported_after(_modules("ui"))
    assert not loaded.intersection(HEAVY), loaded.intersection(HEAVY)
