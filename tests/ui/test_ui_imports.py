"""The UI never imports torch/transformers at module level, and paints before the engine loads."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import mergechat

HEAVY = ("torch", "transformers", "accelerate")
UI_ROOT = Path(mergechat.__file__).parent / "ui"


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_importing_every_ui_module_and_building_the_app_loads_no_torch() -> None:
    modules = sorted(
        "mergechat." + ".".join(p.relative_to(UI_ROOT.parent).with_suffix("").parts)
        for p in UI_ROOT.rglob("*.py")
    )
    modules = [m.removesuffix(".__init__") for m in modules]
    assert "mergechat.ui.app" in modules and "mergechat.ui.screens.chat" in modules
    out = _run(f"""
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
        from mergechat.ui.app import MergechatApp
        from mergechat.ui.options import AppOptions
        MergechatApp(AppOptions())
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    assert out.strip() == "[]"


def test_first_frame_is_painted_before_torch_is_imported(tmp_path: Path) -> None:
    out = _run(f"""
        import asyncio, os, sys
        from pathlib import Path
        os.environ["MERGECHAT_CONFIG_DIR"] = {str(tmp_path / "config")!r}
        os.environ["MERGECHAT_CACHE_DIR"] = {str(tmp_path / "cache")!r}
        from mergechat.ui.app import MergechatApp
        from mergechat.ui.options import AppOptions

        seen = []

        class Probe(MergechatApp):
            def on_ready(self) -> None:
                seen.append("torch" in sys.modules)
                super().on_ready()

        async def main() -> None:
            app = Probe(AppOptions(model_path=Path({str(tmp_path / "missing")!r})))
            async with app.run_test() as pilot:
                await pilot.pause()
        asyncio.run(main())
        print(seen)
    """)
    assert out.strip().splitlines()[-1] == "[False]"
