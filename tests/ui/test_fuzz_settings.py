"""Fuzz what a person types in the settings: every value is accepted or gets a message, no crash."""

from __future__ import annotations

import math
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from app_helpers import wait_for
from hypothesis import example, given
from hypothesis import strategies as st
from screen_helpers import HostApp, detect_engine, make_event
from textual.widgets import Input, Static

from fixtures.fuzz import fuzz_settings
from mergechat.core.api import ModelState
from mergechat.core.detect.capabilities import Recommendation
from mergechat.core.dtypes import DTYPES
from mergechat.core.model.target import looks_remote
from mergechat.core.settings.config import (
    Config,
    ModelConfig,
    load_config,
    parse_generation_field,
    save_config,
)
from mergechat.core.settings.generation import GenerationSettings
from mergechat.ui.screens import settings_logic as logic
from mergechat.ui.screens.settings import SettingsScreen

FUZZ = fuzz_settings(200)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FIELDS = [f.name for f in fields(GenerationSettings)]

#: Text a person might type in a number field: numbers in every spelling, and junk.
_NUMBERISH = st.one_of(
    st.text(max_size=12),
    st.from_regex(r"\s*[-+]?(\d[\d_]*)?(\.\d*)?([eE][-+]?\d+)?\s*", fullmatch=True),
    st.sampled_from(
        [
            "nan", "-nan", "inf", "-inf", "Infinity", "1e400", "-0", "0x10", "0b1", "1_000",
            "1__0", "٣", "１２", "4294967296", "4294967295", "1" * 5000, "1e-400", "0.0",
            "1,5", "½", "None", "true", " 7 ", "\t", "\x00", "2**8",
        ]
    ),
)  # fmt: skip


@FUZZ
@given(name=st.sampled_from(_FIELDS), text=_NUMBERISH)
@example(name="seed", text="1" * 5000)  # int() refuses more than 4300 digits
@example(name="max_new_tokens", text="٣")  # Unicode digits are digits to int()
def test_generation_fields_accept_or_explain(tmp_path: Path, name: str, text: str) -> None:
    try:
        value = parse_generation_field(name, text)
    except ValueError as exc:
        reason = str(exc)
        assert reason.startswith("must be ") and "\n" not in reason, reason
        return
    # An accepted value is one the config file accepts too: it is saved and read back as is.
    config = Config(generation=GenerationSettings(**{name: value}))  # type: ignore[arg-type]
    path = tmp_path / "settings.toml"
    save_config(config, path)
    assert load_config(path) == (config, [])
    if isinstance(value, float):
        assert math.isfinite(value)


_PATHS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "~", "~/", "~no-such-user-here/model", "a" * 300, "/" + "a/" * 3000, "x\x00y",
            "$(touch marker)", "`touch marker`", "a;b", "a\nb", "\x1b[31mred", "ünï 東京 🙂",
            ".", "..", "/", "//", " ", "-", "--help", "[bold]x[/bold]", "%s%n", "\\",
        ]
    ),
)  # fmt: skip


@FUZZ
@given(text=_PATHS)
def test_model_path_check_never_raises(text: str) -> None:
    problem = logic.model_path_problem(text)
    if problem is None:
        url = looks_remote(text.strip())
        assert not text.strip() or url or Path(os.path.expanduser(text)).exists()
    else:
        assert isinstance(problem, str) and not _CONTROL.search(problem), repr(problem)


def test_model_path_check_messages(tmp_path: Path) -> None:
    assert logic.model_path_problem(str(tmp_path)) is None
    assert logic.model_path_problem("") is None
    assert logic.model_path_problem("https://box:8000/v1") is None  # asked on Apply
    assert logic.model_path_problem("~no-such-user-here/m") == (
        "no such file or folder: ~no-such-user-here/m"
    )
    assert "File name too long" in (logic.model_path_problem("a" * 300) or "")
    assert "NUL" in (logic.model_path_problem("a\x00b") or "")
    assert logic.model_path_problem("a\nb") == "no such file or folder: a\\u000ab"


_DEVICES = st.one_of(
    st.text(max_size=10), st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:1", "mps", "xpu"])
)
_DTYPE_TEXT = st.one_of(st.text(max_size=10), st.sampled_from(["auto", "fp16", "bf16", *DTYPES]))


@FUZZ
@given(
    old_path=_PATHS,
    new_path=_PATHS,
    devices=st.tuples(_DEVICES, _DEVICES),
    dtypes=st.tuples(_DTYPE_TEXT, _DTYPE_TEXT),
    trust=st.tuples(st.booleans(), st.booleans()),
    loaded=st.one_of(st.none(), st.tuples(_PATHS, _DEVICES, st.sampled_from(DTYPES))),
    rec=st.one_of(st.none(), st.tuples(_DEVICES, st.sampled_from(DTYPES))),
)
@example(
    old_path="/m", new_path="~no-such-user-here/x\x00", devices=("cpu", "cpu"),
    dtypes=("auto", "auto"), trust=(False, False), loaded=("a" * 5000, "cpu", "float32"), rec=None,
)  # fmt: skip
def test_deciding_a_reload_never_raises(
    old_path: str,
    new_path: str,
    devices: tuple[str, str],
    dtypes: tuple[str, str],
    trust: tuple[bool, bool],
    loaded: tuple[str, str, Any] | None,
    rec: tuple[str, Any] | None,
) -> None:
    old, new = (
        Config(model=ModelConfig(path, device, dtype, trusted))
        for path, device, dtype, trusted in zip(
            (old_path, new_path), devices, dtypes, trust, strict=True
        )
    )
    state = None
    if loaded is not None:
        path, device, dtype = loaded
        state = ModelState(Path(path), "m", device, dtype, dtype, 2048, device_id=device)
    recommendation = Recommendation(rec[0], rec[1], None, "why") if rec else None
    reload, switch = logic.decide_reload(old, new, state, recommendation)
    assert isinstance(reload, bool) and (switch is None or switch in DTYPES)
    if not new_path:
        assert (reload, switch) == (False, None)


@FUZZ
@given(
    device=_DEVICES,
    dtype=_DTYPE_TEXT,
    with_event=st.sampled_from(["none", "assessed", "probes only", "no recommendation"]),
    native=st.one_of(st.none(), st.sampled_from(DTYPES)),
)
def test_choosing_a_device_and_dtype_never_raises(
    device: str, dtype: str, with_event: str, native: Any
) -> None:
    event = {
        "none": None,
        "assessed": make_event(),
        "probes only": make_event(with_assessment=False),
        "no recommendation": make_event(recommendation=None),
    }[with_event]
    rows = logic.verdict_rows(event)
    chosen_device, chosen_dtype = logic.resolve_choice(device, dtype, event)
    row = logic.find_verdict(rows, chosen_device, chosen_dtype)
    reasons = logic.confirmation_reasons(row, dtype, native)
    assert all(isinstance(r, str) for r in reasons)
    assert chosen_dtype is None or chosen_dtype in DTYPES
    ids = [d.id for d in event.capabilities.devices] if event else []
    found = logic.device_id_for(device, ids)
    assert found is None or found in ids


# -- the real screen with what a person may type -------------------------------------------------

_TYPED_PATHS = [
    "~no-such-user-here/model",
    "a" * 300,
    "$(touch marker)",
    "\x1b[31mred",
    "[bold]not markup[/bold]",
]


@pytest.mark.parametrize(
    "typed", _TYPED_PATHS, ids=["unknown-user", "too-long", "shell", "escape", "markup"]
)
async def test_the_settings_screen_survives_any_typed_path(
    typed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    engine, route = detect_engine()
    config_path = tmp_path / "config.toml"

    def make() -> SettingsScreen:
        screen = SettingsScreen(Config(), engine, None, config_path=config_path)  # type: ignore[arg-type]
        route.target = screen
        return screen

    app = HostApp(make)
    async with app.run_test(size=(100, 50)) as pilot:
        await wait_for(pilot, lambda: route.target is not None and route.target.is_mounted)
        screen: SettingsScreen = route.target
        screen.query_one("#model-path", Input).value = typed
        await pilot.pause(0.3)
        screen.action_apply()
        await pilot.pause(0.3)
        assert app.is_running and app.results == []  # not applied: the path does not exist
        error = str(screen.query_one("#model-path-error", Static).render())
        assert error.startswith("no such file or folder") or "cannot use this path" in error
    assert not (tmp_path / "marker").exists() and not config_path.exists()
