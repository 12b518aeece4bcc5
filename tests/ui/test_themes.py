"""Theme files: the shipped ones load and apply; bad user files are reported once and skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from screen_helpers import HostApp
from textual.color import Color
from textual.screen import Screen
from textual.theme import Theme

from mergechat.core.settings import locations
from mergechat.ui.themes import (
    FALLBACK_THEME,
    load_theme_files,
    read_theme_file,
    register_themes,
    resolve_theme_name,
)

SHIPPED = ("mergechat-dark", "mergechat-light", "mergechat-contrast")
# The 16 standard ANSI colours as Rich's 16-colour palette spells them.
ANSI_16 = {
    "#000000", "#800000", "#008000", "#808000", "#000080", "#800080", "#008080", "#c0c0c0",
    "#808080", "#ff0000", "#00ff00", "#ffff00", "#0000ff", "#ff00ff", "#00ffff", "#ffffff",
}  # fmt: skip
GOOD = 'name = "ocean"\nprimary = "#0088cc"\nbackground = "#001122"\n'


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_themes_load_without_problems() -> None:
    themes, problems = load_theme_files([locations.builtin_themes_dir()])
    assert problems == []
    by_name = {t.name: t for t in themes}
    assert set(SHIPPED) <= set(by_name)
    assert by_name["mergechat-dark"].dark and not by_name["mergechat-light"].dark


def test_the_contrast_theme_uses_only_the_16_ansi_colours() -> None:
    theme = read_theme_file(locations.builtin_themes_dir() / "mergechat-contrast.toml")
    assert theme.luminosity_spread == 0  # no derived shades that a 16-colour terminal would blur
    colours = [
        getattr(theme, name)
        for name in ("primary", "secondary", "accent", "foreground", "background", "surface")
    ]
    colours += [v for v in theme.variables.values() if not v.split()[0].isalpha()]
    for value in colours:
        assert Color.parse(value.split()[0]).hex.lower() in ANSI_16, value


@pytest.mark.parametrize("name", SHIPPED)
async def test_each_shipped_theme_applies_in_an_app(name: str) -> None:
    app = HostApp(lambda: Screen(), theme=name)
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.theme == name
        assert app.theme_problems == []


def test_user_themes_add_to_and_override_the_shipped_ones(tmp_path: Path) -> None:
    user = tmp_path / "user"
    write(user, "ocean.toml", GOOD)
    write(user, "dark.toml", 'name = "mergechat-dark"\nprimary = "#ff0000"\n')
    themes, problems = load_theme_files([locations.builtin_themes_dir(), user])
    by_name = {t.name: t for t in themes}
    assert problems == []
    assert by_name["ocean"].primary == "#0088cc"
    assert by_name["mergechat-dark"].primary == "#ff0000"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('name = "x"\nprimary = ', "invalid TOML"),
        ('primary = "#fff"\n', "'name'"),
        ('name = "x"\n', "'primary' colour is missing"),
        ('name = "x"\nprimary = "not-a-colour"\n', "'primary': not a colour"),
        ('name = "x"\nprimary = 12\n', "'primary': not a colour"),
        ('name = "x"\nprimary = "#fff"\nbackground = "#12"\n', "'background': not a colour"),
        ('name = "x"\nprimary = "#fff"\ndark = "yes"\n', "'dark' must be true or false"),
        ('name = "x"\nprimary = "#fff"\nluminosity_spread = 7\n', "'luminosity_spread'"),
        ('name = "x"\nprimary = "#fff"\nprimay = "#fff"\n', "unknown key 'primay'"),
        ('name = "bad name!"\nprimary = "#fff"\n', "'name'"),
        ('name = "x"\nprimary = "#fff"\nvariables = 3\n', "'variables' must be a table"),
        # A variable value is pasted into CSS: anything but a colour or style words is refused.
        (
            'name = "x"\nprimary = "#fff"\n[variables]\nborder = "red; } Screen { display: none"\n',
            "variables.border: not a colour or text style",
        ),
        ('name = "x"\nprimary = "#fff"\n[variables]\n"Bad Name" = "red"\n', "not a variable name"),
        ('name = "x"\nprimary = "#fff"\n[variables]\nborder = "red 250%"\n', "variables.border"),
    ],
)
def test_a_bad_file_is_reported_once_naming_file_and_reason(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = write(tmp_path, "bad.toml", text)
    write(tmp_path, "ocean.toml", GOOD)
    themes, problems = load_theme_files([tmp_path])
    assert [t.name for t in themes] == ["ocean"]
    assert len(problems) == 1
    assert problems[0].startswith(str(path)) and reason in problems[0], problems[0]
    assert problems[0].endswith("theme skipped")


def test_good_variables_are_kept(tmp_path: Path) -> None:
    write(
        tmp_path,
        "v.toml",
        GOOD + '[variables]\nborder = "#ff0000 50%"\n"block-cursor-text-style" = "bold reverse"\n'
        '"text-muted" = "auto 60%"\n',
    )
    (theme,), problems = load_theme_files([tmp_path])
    assert problems == []
    assert theme.variables == {
        "border": "#ff0000 50%",
        "block-cursor-text-style": "bold reverse",
        "text-muted": "auto 60%",
    }


def test_binary_huge_and_unreadable_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00name")
    (tmp_path / "huge.toml").write_text(GOOD + "# " + "x" * 70_000 + "\n")
    (tmp_path / "folder.toml").mkdir()
    themes, problems = load_theme_files([tmp_path, tmp_path / "missing"])
    assert themes == []
    joined = "\n".join(problems)
    assert len(problems) == 3
    assert "not UTF-8" in joined and "larger than 64 KiB" in joined and "cannot read" in joined


def test_the_same_name_twice_in_one_folder_keeps_the_first(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", GOOD)
    write(tmp_path, "b.toml", GOOD.replace("#0088cc", "#ff0000"))
    themes, problems = load_theme_files([tmp_path])
    assert [t.primary for t in themes] == ["#0088cc"]
    assert len(problems) == 1 and "b.toml" in problems[0] and "defined twice" in problems[0]


async def test_register_themes_loads_the_users_folder_and_survives_bad_files() -> None:
    user = locations.user_themes_dir()
    write(user, "ocean.toml", GOOD)
    bad = write(user, "broken.toml", "name = [")
    app = HostApp(lambda: Screen(), theme="ocean")
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.theme == "ocean"
        assert "mergechat-contrast" in app.available_themes
        assert len(app.theme_problems) == 1 and str(bad) in app.theme_problems[0]
        assert register_themes(app) == app.theme_problems  # same files, same single problem


def test_resolve_theme_name_falls_back() -> None:
    assert resolve_theme_name(["mergechat-dark", "ocean"], "ocean") == ("ocean", None)
    name, problem = resolve_theme_name(["mergechat-dark"], "gone")
    assert name == "mergechat-dark" and problem is not None and "'gone'" in problem
    assert resolve_theme_name(["textual-dark"], "gone")[0] == FALLBACK_THEME


def test_read_theme_file_returns_a_textual_theme(tmp_path: Path) -> None:
    theme = read_theme_file(write(tmp_path, "t.toml", GOOD + "dark = false\ntext_alpha = 1\n"))
    assert isinstance(theme, Theme)
    assert (theme.name, theme.dark, theme.text_alpha, theme.background) == (
        "ocean",
        False,
        1.0,
        "#001122",
    )
