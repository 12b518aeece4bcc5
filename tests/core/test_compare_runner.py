"""`CompareRunner` with scripted engines: placement, streaming, failures, scores, stop."""

from __future__ import annotations

import threading
from pathlib import Path

from fixtures.compare_fakes import Factory, assessment, caps
from fixtures.fake_engine import Script
from mergechat.core.compare.events import (
    CompareEvent,
    CompareFinished,
    ComparePhase,
    ComparePlaced,
    CompareSink,
    CompareText,
)
from mergechat.core.compare.plan import CompareModel, ComparePlan
from mergechat.core.compare.runner import CompareRunner
from mergechat.core.settings.generation import GenerationSettings

GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=8)


def _plan(*names: str) -> ComparePlan:
    roles = ["merge", "base", "source", "source"]
    models = [
        CompareModel(n, r, Path("/models") / n, n) for n, r in zip(names, roles, strict=False)
    ]  # type: ignore[arg-type]
    return ComparePlan(tuple(models), from_recipe=True)


def _run(
    factory: Factory, plan: ComparePlan, prompt: str = "hi"
) -> tuple[CompareRunner, list[CompareEvent]]:
    events: list[CompareEvent] = []
    runner = CompareRunner(plan, factory, on_event=events.append)
    runner.prepare()
    runner.ask(prompt, GREEDY)
    runner.close()
    return runner, events


def _stop_when_answering(
    runner: CompareRunner, events: list[CompareEvent], gate: threading.Event
) -> CompareSink:
    """A sink that keeps the events and stops all (then opens ``gate``) once the merge answers."""

    def sink(event: CompareEvent) -> None:
        events.append(event)
        if isinstance(event, ComparePhase) and event.phase == "answering" and event.index == 0:
            runner.stop()
            gate.set()

    return sink


def test_models_that_fit_are_loaded_once_and_answer_in_turn() -> None:
    scripts = {"base": Script(reply=["Hello", " there", "!"])}
    fit = {n: assessment(1) for n in ("merged", "base", "a")}
    factory = Factory(scripts, fit, caps(("cpu", 8)))
    runner, events = _run(factory, _plan("merged", "base", "a"))
    placed = next(e for e in events if isinstance(e, ComparePlaced))
    assert placed.placement.together
    assert [len(factory.engines(n)) for n in ("merged", "base", "a")] == [1, 1, 1]
    assert all(len(e.loads) == 1 for _, e in factory.made)
    finished = next(e for e in events if isinstance(e, CompareFinished))
    merged, base, a = finished.results
    assert merged.reply == a.reply == "Hello! I am a **fake** model."
    assert base.reply == "Hello there!"
    # Streamed text adds up to each reply; the answers came one model after the other.
    for result in finished.results:
        streamed = "".join(
            e.delta for e in events if isinstance(e, CompareText) and e.index == result.index
        )
        assert streamed == result.reply
    answering = [e.index for e in events if isinstance(e, ComparePhase) and e.phase == "answering"]
    assert answering[0] == 0 and sorted(set(answering)) == [0, 1, 2]
    # Scored against the merge's reply; divergence measured from the base's, by word since
    # these fake folders have no tokenizer to show the vocabularies are the same.
    assert merged.agreement == 1.0 and a.agreement == 1.0
    assert all(e.scored == [merged.reply] for _, e in factory.made)
    assert base.divergence is None
    assert merged.divergence is not None and merged.divergence.unit == "word"
    assert (merged.divergence.index, merged.divergence.char_offset) == (0, 5)
    assert runner.placement is not None and runner.placement.same_dtype == "bfloat16"


def test_models_that_do_not_fit_load_answer_and_unload_one_at_a_time() -> None:
    fit = {n: assessment(3) for n in ("merged", "base")}
    factory = Factory({}, fit, caps(("cpu", 4)))
    _, events = _run(factory, _plan("merged", "base"))
    assert not next(e for e in events if isinstance(e, ComparePlaced)).placement.together
    # Each model's engine detects, then loads, answers, is scored and shut down (unloaded)
    # before the next model loads.
    for name in ("merged", "base"):
        (engine,) = factory.engines(name)
        assert engine.calls == ["start", "detect", "load", "generate", "shutdown"]
        assert engine.scored
    phases = [(e.index, e.phase) for e in events if isinstance(e, ComparePhase)]
    assert phases.index((0, "unloaded")) < phases.index((1, "loading"))
    finished = next(e for e in events if isinstance(e, CompareFinished))
    assert [r.error for r in finished.results] == [None, None]
    assert all(r.load_s is not None for r in finished.results)


def test_a_model_that_fails_to_load_carries_the_error_and_the_others_answer() -> None:
    scripts = {"base": Script(load_error="base is broken")}
    fit = {n: assessment(1) for n in ("merged", "base", "a")}
    factory = Factory(scripts, fit, caps(("cpu", 8)))
    _, events = _run(factory, _plan("merged", "base", "a"))
    merged, base, a = next(e for e in events if isinstance(e, CompareFinished)).results
    assert base.error == "base is broken" and base.reply == ""
    assert merged.reply and a.reply and merged.error is None
    # No base reply: no divergence to report, but the merge's scores still come.
    assert a.divergence is None and a.agreement == 1.0


def test_a_model_the_detector_cannot_read_is_shown_failed() -> None:
    fit = {"merged": assessment(1)}  # no assessment for "a": its detect answers none

    factory = Factory({}, fit, caps(("cpu", 8)))
    original = factory.__call__

    def failing(model: CompareModel, sink):  # type: ignore[no-untyped-def]
        engine = original(model, sink)
        if model.name == "a":
            from mergechat.core.api import EngineNotice

            engine.script.capabilities = None
            engine._detect = lambda *_: engine._emit(  # type: ignore[method-assign]
                EngineNotice("a: config.json is missing", level="error")
            )
        return engine

    events: list[CompareEvent] = []
    runner = CompareRunner(_plan("merged", "a"), failing, on_event=events.append)
    runner.prepare()
    results = runner.ask("hi", GREEDY)
    runner.close()
    assert results[1].error == "a: config.json is missing"
    assert results[0].reply and results[0].error is None


def test_stop_all_ends_the_reply_and_skips_the_rest() -> None:
    gate = threading.Event()
    scripts = {"merged": Script(reply_gate=gate)}
    fit = {n: assessment(1) for n in ("merged", "base")}
    factory = Factory(scripts, fit, caps(("cpu", 8)))
    events: list[CompareEvent] = []
    runner = CompareRunner(_plan("merged", "base"), factory, on_event=events.append)
    runner.prepare()
    runner._sink = _stop_when_answering(runner, events, gate)
    results = runner.ask("hi", GREEDY)
    runner.close()
    assert results[0].finish == "stopped"
    assert factory.engines("base")[0].generations == []
    assert any(isinstance(e, ComparePhase) and e.phase == "stopped" for e in events)
    assert next(e for e in events if isinstance(e, CompareFinished)).stopped


def test_models_a_stop_skips_carry_nothing_of_the_previous_prompt() -> None:
    gate = threading.Event()
    gate.set()  # the first prompt runs through
    scripts = {"merged": Script(reply_gate=gate)}
    fit = {n: assessment(1) for n in ("merged", "base", "a")}
    factory = Factory(scripts, fit, caps(("cpu", 8)))
    events: list[CompareEvent] = []
    runner = CompareRunner(_plan("merged", "base", "a"), factory, on_event=events.append)
    runner.prepare()
    first = runner.ask("hi", GREEDY)
    assert all(r.reply and r.stats for r in first) and first[2].agreement == 1.0
    gate.clear()
    runner._sink = _stop_when_answering(runner, events, gate)
    merged, base, a = runner.ask("again", GREEDY)
    runner.close()
    assert merged.finish == "stopped"
    for skipped in (base, a):
        assert (skipped.reply, skipped.stats, skipped.finish) == ("", None, "stopped")
        assert (skipped.divergence, skipped.agreement, skipped.agreement_note) == (None,) * 3
        assert skipped.error is None
    # The base did not answer this prompt: no divergence measured from its previous reply.
    assert merged.divergence is None
    assert [len(factory.engines(n)[0].generations) for n in ("merged", "base", "a")] == [2, 1, 1]


def test_a_stop_while_loading_skips_the_loads_not_begun_and_ask_loads_them() -> None:
    gate = threading.Event()
    scripts = {"merged": Script(load_gate=gate)}
    fit = {n: assessment(1) for n in ("merged", "base", "a")}
    factory = Factory(scripts, fit, caps(("cpu", 8)))
    events: list[CompareEvent] = []
    runner = CompareRunner(_plan("merged", "base", "a"), factory, on_event=events.append)

    def stop_when_loading(event: CompareEvent) -> None:
        events.append(event)
        if isinstance(event, ComparePhase) and event.phase == "loading" and event.index == 0:
            runner.stop()  # the merge's load is asked for: it still runs to its end
            gate.set()

    runner._sink = stop_when_loading
    assert runner.prepare().together
    assert [len(factory.engines(n)[0].loads) for n in ("merged", "base", "a")] == [1, 0, 0]
    stopped = [e.index for e in events if isinstance(e, ComparePhase) and e.phase == "stopped"]
    assert stopped == [1, 2]
    # The next prompt loads the models the stop skipped, then every model answers.
    runner._sink = events.append
    results = runner.ask("hi", GREEDY)
    runner.close()
    assert [len(factory.engines(n)[0].loads) for n in ("merged", "base", "a")] == [1, 1, 1]
    assert all(r.reply and r.error is None for r in results)


def test_a_stop_while_detecting_keeps_no_placement_and_ask_prepares_again() -> None:
    fit = {n: assessment(1) for n in ("merged", "base")}
    factory = Factory({}, fit, caps(("cpu", 8)))
    events: list[CompareEvent] = []
    runner = CompareRunner(_plan("merged", "base"), factory, on_event=events.append)

    def stop_when_detecting(event: CompareEvent) -> None:
        events.append(event)
        if isinstance(event, ComparePhase) and event.phase == "detecting":
            runner.stop()

    runner._sink = stop_when_detecting
    runner.prepare()
    assert runner.placement is None
    assert [len(factory.engines(n)) for n in ("merged", "base")] == [1, 0]
    assert not any(isinstance(e, ComparePlaced) for e in events)
    runner._sink = events.append
    results = runner.ask("hi", GREEDY)
    runner.close()
    # Only the model not inspected yet is asked about again; both then load and answer.
    assert [len(factory.engines(n)[0].detections) for n in ("merged", "base")] == [1, 1]
    assert all(r.reply for r in results)
