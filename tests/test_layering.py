"""The two walls: the core never imports Textual; the UI never imports torch at module level."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_core_sources_never_import_textual() -> None:
    for file in (SRC / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "textual" for n in names), file


@pytest.mark.parametrize("module", _modules("ui"))
def test_ui_module_level_imports_no_torch(module: str) -> None:
    file = SRC.parent / Path(*module.split("."))
    path = file / "__init__.py" if file.is_dir() else file.with_suffix(".py")
    tree = ast.parse(path.read_text())
    for node in tree.body:  # module level only; imports inside functions are allowed
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        assert not any(n.split(".")[0] in HEAVY for n in names), f"{path}: {names}"


def test_importing_the_whole_ui_loads_no_torch() -> None:
    loaded = _imported_after(_modules("ui"))
    assert not loaded.intersection(HEAVY), loaded.intersection(HEAVY)
