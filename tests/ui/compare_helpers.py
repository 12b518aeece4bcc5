"""Build the compare view around scripted engines (`fixtures.compare_fakes.Factory`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app_helpers import wait_for
from textual.pilot import Pilot

from fixtures.compare_fakes import Factory, assessment, caps
from fixtures.fake_engine import Script
from mergechat.core.compare.plan import CompareModel, ComparePlan, Role
from mergechat.core.settings.generation import GenerationSettings
from mergechat.ui.compare.app import CompareApp
from mergechat.ui.compare.options import CompareOptions

GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=16)
NAMES = ("merged", "base", "a")
ROLES: tuple[Role, ...] = ("merge", "base", "source", "source")


def plan(*names: str) -> ComparePlan:
    """A recipe-like plan: the merge, its base, then sources (folders that need not exist)."""
    models = [
        CompareModel(n, r, Path("/models") / n, n) for n, r in zip(names, ROLES, strict=False)
    ]
    return ComparePlan(tuple(models), from_recipe=True)


def compare_app(
    scripts: dict[str, Script] | None = None,
    names: tuple[str, ...] = NAMES,
    *,
    free_gib: float = 8,
    record_history: bool | None = None,
) -> tuple[CompareApp, Factory]:
    """The view on ``names`` (each needs 1 GiB; ``free_gib`` decides together or one at a time)."""
    factory = Factory(scripts or {}, {n: assessment(1) for n in names}, caps(("cpu", free_gib)))
    options = CompareOptions(plan(*names), GREEDY, record_history=record_history, factory=factory)
    return CompareApp(options), factory


async def prepared(app: CompareApp, pilot: Pilot[Any]) -> None:
    """Until every usable model is loaded (or failed) and no job runs."""
    await wait_for(
        pilot,
        lambda: (
            not app.jobs.busy()
            and all(c.info.phase in ("loaded", "failed", "waiting") for c in app.board.columns)
            and "Placement: asking" not in placement_text(app)
        ),
    )


async def answered(app: CompareApp, pilot: Pilot[Any]) -> None:
    """Until no job runs and the last comparison is finished on screen."""
    await wait_for(
        pilot,
        lambda: (
            not app.jobs.busy()
            and app.wall_s is not None
            and all(c.info.phase in ("done", "failed", "stopped") for c in app.board.columns)
        ),
    )


async def send(pilot: Pilot[Any], text: str) -> None:
    """Type ``text`` in the prompt and press Enter."""
    await pilot.press(*text)
    await pilot.press("enter")


def placement_text(app: CompareApp) -> str:
    """The placement line as shown."""
    from textual.widgets import Static

    return str(app.query_one("#placement", Static).content)
