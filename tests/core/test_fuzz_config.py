"""Fuzz config.toml beyond test_config.py: raw bytes, typed TOML documents, mutations, extremes.

Whatever the file holds, `load_config` returns a valid `Config` and one-line problems naming the
file, never raises, and what it accepted is written and read back unchanged.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fixtures.fuzz import fuzz_settings
from fixtures.toml_read import tomllib
from mergechat.core.settings.config import (
    MAX_PROBLEMS,
    MAX_RECENT_MODELS,
    Config,
    config_text,
    load_config,
    save_config,
)
from mergechat.core.settings.toml_text import toml_key, toml_value

FUZZ = fuzz_settings(150)
_DEVICE = re.compile(r"auto|cpu|mps|(?:cuda|xpu)(?::\d{1,3})?")
_THEME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_KNOWN = {
    "model": ["path", "device", "dtype", "trust_remote_code"],
    "generation": [
        "temperature",
        "top_p",
        "top_k",
        "max_new_tokens",
        "repetition_penalty",
        "seed",
        "system_prompt",
    ],
    "ui": ["theme", "recent_models"],
    "keymap": ["quit", "app.quit", "precision", "send"],
    "history": ["enabled", "resume_last"],
}


def check(path: Path) -> tuple[Config, list[str]]:
    """Load ``path`` and assert every invariant of the result; return it."""
    config, problems = load_config(path)
    assert isinstance(config, Config)
    assert len(problems) <= MAX_PROBLEMS
    for problem in problems:
        assert isinstance(problem, str) and problem.startswith(str(path)), problem
        assert not re.search(r"[\x00-\x1f\x7f-\x9f]", problem), repr(problem)
    model, gen = config.model, config.generation
    assert isinstance(model.path, str) and "\x00" not in model.path
    assert _DEVICE.fullmatch(model.device), model.device
    assert model.dtype in ("auto", "float32", "bfloat16", "float16")
    assert isinstance(model.trust_remote_code, bool)
    for name, ok in (
        ("temperature", lambda v: v >= 0),
        ("top_p", lambda v: 0 < v <= 1),
        ("repetition_penalty", lambda v: v > 0),
    ):
        value = getattr(gen, name)
        assert value is None or (isinstance(value, float) and math.isfinite(value) and ok(value)), (
            name,
            value,
        )
    assert gen.top_k is None or (type(gen.top_k) is int and gen.top_k >= 0)
    assert type(gen.max_new_tokens) is int and gen.max_new_tokens >= 1
    assert gen.seed is None or (type(gen.seed) is int and 0 <= gen.seed < 2**32)
    assert isinstance(gen.system_prompt, str)
    assert _THEME.fullmatch(config.theme)
    assert len(config.recent_models) <= MAX_RECENT_MODELS
    assert all(isinstance(r, str) and r.strip() for r in config.recent_models)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in config.keymap.items())
    assert isinstance(config.history.enabled, bool) and isinstance(config.history.resume_last, bool)
    return config, problems


def round_trips(config: Config, folder: Path) -> None:
    out = folder / "saved.toml"
    save_config(config, out)
    # The recent models are state, not settings: they are not written to the file.
    assert load_config(out) == (replace(config, recent_models=[]), [])


# -- raw bytes ------------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=400))
@example(data=b"\xff\xfe[model]\n")  # UTF-16 BOM: not UTF-8
@example(data=b"[model]\npath = '\xc3\x28'\n")  # invalid UTF-8 inside a string
@example(data=b"\xef\xbb\xbf[model]\ndevice = 'cpu'\n")  # UTF-8 BOM (Windows editors)
@example(data=b"[model]\x00\npath='x'\n")
def test_arbitrary_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bytes.toml"
    path.write_bytes(data)
    config, problems = check(path)
    if data.startswith(b"\xef\xbb\xbf[model]\ndevice"):
        assert config.model.device == "cpu" and problems == []
    round_trips(config, tmp_path)


# -- typed TOML documents --------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, 1, -1, 2**31, 2**32, 2**63 - 1, 2**64, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=24),
    st.sampled_from(["auto", "cpu", "cuda:0", "cuda:9999", "bf16", "half", "fp32", "", " "]),
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    st.dates(),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _render(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {_render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, dt.date):
        return value.isoformat()
    return toml_value(value)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A TOML document: the real tables and keys (and unknown ones) with values of any type."""
    doc: dict[str, Any] = {}
    for table, keys in _KNOWN.items():
        if draw(st.booleans()):
            names = st.sampled_from(keys) | st.text(max_size=8)
            doc[table] = draw(st.dictionaries(names, _VALUES, max_size=5))
        elif draw(st.integers(0, 9)) == 0:
            doc[table] = draw(_SCALARS)  # a table given as a plain value
    doc.update(draw(st.dictionaries(st.text(max_size=8), _VALUES, max_size=2)))
    return doc


def _document_text(doc: dict[str, Any]) -> str:
    plain = [f"{toml_key(k)} = {_render(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    tables = []
    for name, table in doc.items():
        if isinstance(table, dict):
            tables.append(f"[{toml_key(name)}]")
            tables += [f"{toml_key(k)} = {_render(v)}" for k, v in table.items()]
    return "\n".join([*plain, *tables]) + "\n"


@FUZZ
@given(doc=documents())
@example(doc={"generation": {"max_new_tokens": 10**30, "seed": 2**32, "top_k": 2**64}})
@example(doc={"generation": {"temperature": math.inf, "top_p": math.nan, "seed": -1}})
@example(doc={"model": {"path": "a\x00b", "device": "\x1b[31mcpu"}, "ui": {"theme": "\n"}})
@example(doc={"keymap": {"a\nb": "f1", "x": {"y": {"z": "ctrl+q"}}, "bad": 5}})
@example(doc={"ui": {"recent_models": ["/a", 5, "", "/a", "\x00", *map(str, range(30))]}})
def test_typed_documents(tmp_path: Path, doc: dict[str, Any]) -> None:
    text = _document_text(doc)
    tomllib.loads(text)  # the document itself is valid TOML: the reader is what is fuzzed
    path = tmp_path / "doc.toml"
    path.write_text(text, encoding="utf-8")
    config, problems = check(path)
    round_trips(config, tmp_path)
    # Everything that was valid and known was kept, and anything else was reported.
    if doc.get("generation") == {"max_new_tokens": 10**30, "seed": 2**32, "top_k": 2**64}:
        assert config.generation.max_new_tokens == 10**30 and config.generation.seed is None
        assert len(problems) == 1 and "generation.seed" in problems[0]


# -- mutations of a real config file ---------------------------------------------------------------

_BASE_TEXT = config_text(Config(keymap={"quit": "ctrl+q", "app.x": "f5"})).replace(
    "[ui]\n", '[ui]\nrecent_models = ["/models/a", "/models/b"]\n'
)


@FUZZ
@given(
    edits=st.lists(
        st.tuples(
            st.integers(0, len(_BASE_TEXT)),
            st.integers(0, 6),
            st.text(alphabet=st.sampled_from([*"[]{}=\"'\\#.,\n \t0-9ae", "\x00"]), max_size=4),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_config_files(tmp_path: Path, edits: list[tuple[int, int, str]]) -> None:
    text = _BASE_TEXT
    for at, cut, insert in edits:
        at = min(at, len(text))
        text = text[:at] + insert + text[at + cut :]
    path = tmp_path / "mutated.toml"
    path.write_text(text, encoding="utf-8")
    config, _ = check(path)
    round_trips(config, tmp_path)


# -- extremes -------------------------------------------------------------------------------------


_EXTREMES: dict[str, Any] = {
    "deep dotted keymap": lambda: "[keymap." + ".".join(["a"] * 5000) + "]\nx = 'f1'\n",
    "deep inline table": lambda: "[keymap]\nx = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n",
    "deep array": lambda: "x = " + "[" * 5000 + "]" * 5000 + "\n",
    "many unknown keys": lambda: "\n".join(f"k{i} = {i}" for i in range(20000)) + "\n",
    "many bad keymap ids": lambda: (
        "[keymap]\n" + "\n".join(f'"{i} {i}" = "f1"' for i in range(5000))
    ),
    "many recent models": lambda: (
        "[ui]\nrecent_models = [" + ",".join(f'"/m/{i}"' for i in range(50000)) + "]\n"
    ),
    "long line": lambda: "[model]\npath = '" + "p" * 1_000_000 + "'\n",
    "many tables": lambda: "".join(f"[t{i}]\n" for i in range(5000)),
}


@pytest.mark.parametrize("name", list(_EXTREMES))
def test_extreme_files_are_read_quickly(tmp_path: Path, name: str) -> None:
    path = tmp_path / "big.toml"
    path.write_text(_EXTREMES[name](), encoding="utf-8")
    started = time.perf_counter()
    config, problems = check(path)
    assert time.perf_counter() - started < 5.0, name  # about 0.1 s here; quadratic was 20 s
    if len(problems) == MAX_PROBLEMS:
        assert problems[-1].endswith("more problems not shown")
    if name == "many recent models":
        assert config.recent_models == [f"/m/{i}" for i in range(MAX_RECENT_MODELS)]


def test_a_config_path_that_is_not_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    assert "cannot read it" in check(folder)[1][0]
    loop = tmp_path / "loop.toml"
    loop.symlink_to(loop)
    config, problems = check(loop)
    assert config == Config() and len(problems) == 1
    assert check(tmp_path / "missing.toml") == (Config(), [])
