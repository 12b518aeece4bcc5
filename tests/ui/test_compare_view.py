"""The compare view with scripted engines: columns, streaming, stop, regenerate, failures,
precision per column, history."""

from __future__ import annotations

import threading

from app_helpers import notifications, wait_for
from compare_helpers import answered, compare_app, placement_text, prepared, send
from textual.widgets import OptionList, Static

from fixtures.compare_fakes import assessment
from fixtures.fake_engine import DEFAULT_REPLY, Script
from mergechat.core.store.store import HistoryStore
from mergechat.ui.screens.precision import PrecisionScreen

SIZE = (140, 40)
FAKE_REPLY = "".join(DEFAULT_REPLY)


async def test_each_model_gets_a_column_with_its_status_line_after_prepare() -> None:
    app, _ = compare_app()
    async with app.run_test(size=SIZE) as pilot:
        await prepared(app, pilot)
        columns = app.board.columns
        assert [c.model.label for c in columns] == ["merge: merged", "base: base", "source: a"]
        for column in columns:
            assert column.status_text.startswith("cpu bfloat16 │ loaded")
        assert "all 3 models fit together" in placement_text(app)
        assert "same precision for all" in placement_text(app)


async def test_a_prompt_streams_into_every_column_and_shows_the_agreement() -> None:
    app, factory = compare_app({"base": Script(reply=["Hello", " there", "!"])})
    async with app.run_test(size=SIZE) as pilot:
        await prepared(app, pilot)
        await send(pilot, "hi")
        await answered(app, pilot)
        merged, base, a = app.board.columns
        assert merged.reply_text == a.reply_text == FAKE_REPLY
        assert base.reply_text == "Hello there!"
        assert all(c.info.tokens_per_s == 25.0 and c.info.phase == "done" for c in (merged, a))
        assert "the reference" in merged.result_text
        assert "top-1 agreement with merged: 100.0%" in a.result_text
        assert "parts from the base at word 1" in a.result_text
        assert "the base" in base.result_text
        assert all(e.generations[0][0][-1].content == "hi" for _, e in factory.made)


async def test_escape_stops_every_answer_and_skips_the_models_not_asked_yet() -> None:
    gate = threading.Event()
    gate.set()  # the first comparison runs through
    app, factory = compare_app({"merged": Script(reply_gate=gate)})
    try:
        async with app.run_test(size=SIZE) as pilot:
            await prepared(app, pilot)
            await send(pilot, "hi")
            await answered(app, pilot)
            gate.clear()
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: app.board.column(0).info.phase == "answering")
            await pilot.press("escape")
            gate.set()
            await answered(app, pilot)
            assert app.results[0].finish == "stopped"
            assert len(factory.engines("base")[0].generations) == 1  # not asked again
            assert [c.info.phase for c in app.board.columns] == ["stopped"] * 3
            # A skipped model shows no answer (not the previous prompt's) and saves none.
            assert app.board.column(1).reply_text == "" and app.results[1].reply == ""
            assert any("Stopped" in n.message for n in notifications(app))
            await wait_for(pilot, lambda: len(app.saved) == 2)
        with HistoryStore.open() as store:
            stopped = store.get_conversation(app.saved[1])
        assert [m.text for m in stopped.messages[2:]] == ["", ""]
    finally:
        gate.set()


async def test_ctrl_r_asks_every_model_the_same_prompt_again() -> None:
    app, factory = compare_app()
    async with app.run_test(size=SIZE) as pilot:
        await prepared(app, pilot)
        await pilot.press("ctrl+r")  # nothing asked yet
        await wait_for(
            pilot, lambda: any("Nothing to regenerate" in n.message for n in notifications(app))
        )
        await send(pilot, "hi")
        await answered(app, pilot)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: all(len(e.generations) == 2 for _, e in factory.made))
        await answered(app, pilot)
        assert all(g[0][-1].content == "hi" for _, e in factory.made for g in e.generations)
        assert app.board.column(2).reply_text == FAKE_REPLY  # the new answer, not appended


async def test_a_model_that_fails_to_load_shows_its_error_while_the_others_answer() -> None:
    app, _ = compare_app({"base": Script(load_error="base is broken")})
    async with app.run_test(size=SIZE) as pilot:
        await prepared(app, pilot)
        base = app.board.column(1)
        assert base.info.phase == "failed" and "base is broken" in base.error_text
        await send(pilot, "hi")
        await answered(app, pilot)
        assert "base is broken" in base.error_text and base.reply_text == ""
        assert app.board.column(0).reply_text == app.board.column(2).reply_text == FAKE_REPLY


async def test_the_precision_key_switches_the_focused_column_and_f7_all() -> None:
    app, factory = compare_app()
    async with app.run_test(size=SIZE) as pilot:
        await prepared(app, pilot)
        await pilot.press("tab", "right")  # the prompt, then column 0, then column 1
        assert app.board.current == 1
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: isinstance(app.screen, PrecisionScreen))
        title = app.screen.query_one("#precision-title", Static).content
        assert str(title).startswith("base: base: Precision")
        await pilot.press("1")  # float32
        await wait_for(pilot, lambda: app.board.column(1).info.dtype == "float32")
        assert factory.engines("base")[0].switches == ["float32"]
        assert factory.engines("merged")[0].switches == []
        await wait_for(pilot, lambda: "precisions differ" in placement_text(app))
        await pilot.press("f7")
        await wait_for(pilot, lambda: all(c.info.dtype == "float32" for c in app.board.columns))
        assert factory.engines("merged")[0].switches == ["float32"]
        await wait_for(pilot, lambda: "all in float32" in placement_text(app))


async def test_same_precision_toggle_places_the_models_again() -> None:
    app, factory = compare_app()
    async with app.run_test(size=SIZE) as pilot:
        await prepared(app, pilot)
        assert app.runner is not None and app.runner.placement is not None
        assert app.runner.placement.same_dtype == "bfloat16"
        await pilot.press("f8")
        await prepared(app, pilot)
        assert len(factory.made) == 6 and all(e.shut_down for _, e in factory.made[:3])
        assert "each model in its own recommended precision" in placement_text(app)
        assert "Same precision for all: off" in str(app.query_one("#compare-info").render())


async def test_the_comparison_is_saved_as_one_conversation() -> None:
    app, _ = compare_app()
    async with app.run_test(size=SIZE) as pilot:
        await prepared(app, pilot)
        await send(pilot, "hi")
        await answered(app, pilot)
        await wait_for(pilot, lambda: len(app.saved) == 1)
    with HistoryStore.open() as store:
        conversation = store.get_conversation(app.saved[0])
    assert [m.role for m in conversation.messages] == ["user", *["assistant"] * 3]
    assert [m.text for m in conversation.messages[1:]] == [FAKE_REPLY] * 3


async def test_no_history_saves_nothing_and_quit_closes_every_engine() -> None:
    app, factory = compare_app(record_history=False)
    async with app.run_test(size=SIZE) as pilot:
        await prepared(app, pilot)
        await send(pilot, "hi")
        await answered(app, pilot)
        await pilot.press("ctrl+q")
    assert app.jobs.ended.wait(5)  # the worker closed the runner, then ended
    assert all(e.shut_down for _, e in factory.made)
    assert app.saved == []
    with HistoryStore.open() as store:
        assert store.list_conversations() == []


async def test_models_that_do_not_fit_together_answer_one_at_a_time() -> None:
    app, factory = compare_app(free_gib=2)
    async with app.run_test(size=SIZE) as pilot:
        await prepared(app, pilot)
        assert "one model at a time (load, answer, unload)" in placement_text(app)
        assert all(c.info.phase == "waiting" for c in app.board.columns)
        await send(pilot, "hi")
        await answered(app, pilot)
        for column in app.board.columns:
            assert column.reply_text == FAKE_REPLY and "loaded in" in column.result_text
            assert column.status_text.startswith("cpu bfloat16 │ done")
        assert all(e.shut_down for _, e in factory.made)  # each unloaded after its answer


async def test_the_precision_menu_shows_the_detector_verdicts_of_the_focused_model() -> None:
    app, factory = compare_app()
    factory.fit["base"] = assessment(1, ok=("float32", "bfloat16"))
    async with app.run_test(size=SIZE) as pilot:
        await prepared(app, pilot)
        await pilot.press("tab", "right")  # column 1: the base
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: isinstance(app.screen, PrecisionScreen))
        options = app.screen.query_one(OptionList)
        shown = [str(options.get_option_at_index(i).prompt) for i in range(3)]
        assert "float32   ok" in shown[0] and "bfloat16  ok" in shown[1]
        assert "unsupported: not on this fake device" in shown[2]
        assert not any("not measured" in line for line in shown)
        await pilot.press("3")  # float16 is ruled out for this model: the menu says why
        notice = str(app.screen.query_one("#precision-notice", Static).content)
        assert "float16 cannot be used here" in notice
        assert factory.engines("base")[0].switches == []
