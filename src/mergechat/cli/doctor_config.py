"""Doctor's "Settings" section: every problem in config.toml, keymap clashes included, so the
ones the app's notices left out can be read in full."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mergechat.core.settings import locations


def config_problems() -> list[str]:
    """The config file's problems, then the keymap's unknown ids and keys given to two actions."""
    from mergechat.core.settings.config import load_config

    config, problems = load_config()
    if config.keymap:
        # The bindings live in the UI package (Textual); imported only for a keymap to check.
        from mergechat.ui.bindings import keymap_problems

        problems += keymap_problems(config.keymap)
    return problems


def lines(problems: Sequence[str], row: Callable[[str, object], str]) -> list[str]:
    """The text report's section: the config file, then one row per problem (or "none")."""
    found = [row("Config problems" if i == 0 else "", p) for i, p in enumerate(problems)]
    return [
        "Settings",
        row("Config file", locations.config_file()),
        *(found or [row("Config problems", "none")]),
    ]
