"""`CompareRunner.switch` / `switch_all`: per-column precision with scripted engines."""

from __future__ import annotations

from pathlib import Path

from fixtures.compare_fakes import Factory, assessment, caps
from fixtures.fake_engine import Script
from mergechat.core.compare.events import (
    CompareEvent,
    ComparePhase,
    CompareSwitched,
)
from mergechat.core.compare.plan import CompareModel, ComparePlan
from mergechat.core.compare.runner import CompareRunner
from mergechat.core.settings.generation import GenerationSettings

GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=4)
SERVER = "http://127.0.0.1:9/v1"


def _runner(
    factory: Factory, *names: str, one_at_a_time: bool = False
) -> tuple[CompareRunner, list[CompareEvent]]:
    roles = ["merge", "base", "source", "source"]
    models = [
        CompareModel(n, r, Path(n if n == SERVER else f"/models/{n}"), n)  # type: ignore[arg-type]
        for n, r in zip(names, roles, strict=False)
    ]
    events: list[CompareEvent] = []
    runner = CompareRunner(
        ComparePlan(tuple(models)), factory, one_at_a_time=one_at_a_time, on_event=events.append
    )
    runner.prepare()
    events.clear()
    return runner, events


def _switched(events: list[CompareEvent]) -> list[CompareSwitched]:
    return [e for e in events if isinstance(e, CompareSwitched)]


def test_a_loaded_model_switches_through_its_engine_and_answers_in_the_new_precision() -> None:
    factory = Factory({}, {n: assessment(1) for n in ("merged", "base")}, caps(("cpu", 8)))
    runner, events = _runner(factory, "merged", "base")
    runner.switch(1, "float32")
    (switch,) = _switched(events)
    assert switch.index == 1 and switch.error is None
    assert switch.state is not None and switch.state.dtype == "float32"
    phases = [(e.index, e.phase) for e in events if isinstance(e, ComparePhase)]
    assert phases[0] == (1, "switching") and phases[-1] == (1, "loaded")
    assert factory.engines("base")[0].switches == ["float32"]
    assert factory.engines("merged")[0].switches == []
    assert runner.placement is not None
    assert [m.dtype for m in runner.placement.models if m] == ["bfloat16", "float32"]
    assert runner.placement.same_dtype is None
    assert runner.placement.reason.endswith("precisions differ between models")
    merged, base = runner.ask("hi", GREEDY)
    runner.close()
    assert base.stats is not None and base.stats.dtype == "float32"
    assert merged.stats is not None and merged.stats.dtype == "bfloat16"


def test_a_failed_switch_reports_the_error_and_keeps_the_previous_precision() -> None:
    scripts = {"base": Script(switch_error="not enough memory for float32")}
    factory = Factory(scripts, {n: assessment(1) for n in ("merged", "base")}, caps(("cpu", 8)))
    runner, events = _runner(factory, "merged", "base")
    runner.switch(1, "float32")
    (switch,) = _switched(events)
    assert switch.error == "not enough memory for float32"
    assert switch.state is not None and switch.state.dtype == "bfloat16"
    assert runner.placement is not None and runner.placement.same_dtype == "bfloat16"
    results = runner.ask("hi", GREEDY)
    runner.close()
    assert [r.error for r in results] == [None, None]


def test_a_model_not_loaded_now_records_the_precision_for_its_next_load() -> None:
    factory = Factory({}, {n: assessment(3) for n in ("merged", "base")}, caps(("cpu", 4)))
    runner, events = _runner(factory, "merged", "base")
    assert runner.placement is not None and not runner.placement.together
    runner.switch(0, "float32")
    assert _switched(events) == [CompareSwitched(0, None, None)]
    assert factory.engines("merged")[0].switches == []
    runner.ask("hi", GREEDY)
    runner.close()
    assert [e.loads[0].dtype for _, e in factory.made] == ["float32", "bfloat16"]


def test_switch_all_puts_every_local_model_in_one_precision_and_says_served_ones_cannot() -> None:
    fit = {n: assessment(1) for n in ("merged", "base")}
    factory = Factory({}, fit, caps(("cpu", 8)))
    runner, events = _runner(factory, "merged", "base", SERVER)
    runner.switch_all("float32")
    merged, base, served = _switched(events)
    assert merged.error is base.error is None
    assert merged.state is not None and merged.state.dtype == "float32"
    assert served.state is not None and served.error is not None and "served" in served.error
    assert factory.engines(SERVER)[0].switches == []
    assert runner.placement is not None and runner.placement.same_dtype == "float32"
    assert runner.placement.reason.endswith("all in float32")
    runner.close()


def test_a_model_that_failed_to_load_cannot_be_switched() -> None:
    scripts = {"base": Script(load_error="base is broken")}
    factory = Factory(scripts, {n: assessment(1) for n in ("merged", "base")}, caps(("cpu", 8)))
    runner, events = _runner(factory, "merged", "base")
    runner.switch(1, "float32")
    runner.close()
    (switch,) = _switched(events)
    assert switch.state is None and switch.error == "base cannot be compared: base is broken"
    assert factory.engines("base")[0].switches == []
