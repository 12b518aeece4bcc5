"""Every key binding of the app, each with an id (for the `[keymap]` config) and a description."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from typing import Final

from textual.binding import Binding
from textual.dom import DOMNode

from mergechat.ui.compare.keys import compare_ids
from mergechat.ui.widgets.prompt_input import PromptInput

#: App-wide keys (the app disables the ones that open screens while another screen is on top).
APP_BINDINGS: Final[list[Binding]] = [
    Binding("f1", "help", "Help", id="help"),
    Binding("f2", "settings", "Settings", id="settings"),
    Binding("ctrl+t,f3", "precision", "Precision", id="precision"),
    # Not in the footer: it is full at 100 columns; F1 and the resume notice name the key.
    Binding("f4", "conversations", "Conversations", show=False, id="conversations"),
    # Not in the footer: Textual shows the palette key at the footer's right end already.
    Binding(
        "ctrl+p", "command_palette", "Commands", show=False, priority=True, id="command_palette"
    ),
    Binding("ctrl+q", "quit", "Quit", priority=True, id="quit"),
]

#: Keys of the chat screen.
CHAT_BINDINGS: Final[list[Binding]] = [
    Binding("escape", "stop", "Stop", id="stop"),
    # Priority so that the prompt's "copy" does not swallow it while a reply streams.
    Binding("ctrl+c", "interrupt", "Stop reply", show=False, priority=True, id="interrupt"),
    Binding("ctrl+r", "regenerate", "Regenerate", id="regenerate"),
    Binding("ctrl+o", "continue_reply", "Continue", id="continue"),
    Binding("ctrl+n", "new_chat", "New chat", id="new_chat"),
    # Priority: the prompt has these keys too (redo, select line), and it almost always has focus.
    Binding("ctrl+y", "copy_last", "Copy last reply", show=False, priority=True, id="copy_last"),
    Binding(
        "f6", "copy_menu", "Copy a message or code block", show=False, priority=True, id="copy_menu"
    ),
    # Not ctrl+e: the prompt's end-of-line key, which people type out of habit.
    Binding("ctrl+s", "export", "Export the conversation", show=False, id="export"),
]

_SCREEN_PACKAGE = "mergechat.ui.screens"
#: The compare view is its own app with its own help: its keys are not the chat's.
_COMPARE_PACKAGE = "mergechat.ui.compare"


def main_bindings() -> list[Binding]:
    """The prompt's, the chat screen's and the app's bindings, in help-screen order."""
    prompt = [b for b in PromptInput.BINDINGS if isinstance(b, Binding)]
    return [*prompt, *CHAT_BINDINGS, *APP_BINDINGS]


def _subclasses(cls: type) -> Iterator[type]:
    sub: type
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def dialog_bindings() -> list[tuple[str, Binding]]:
    """(screen name, binding) of every other mergechat screen or widget with binding ids.

    Imports every module of `mergechat.ui.screens` (call it after the first frame).
    """
    package = importlib.import_module(_SCREEN_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{_SCREEN_PACKAGE}.{module.name}")
    main = {id(b) for b in main_bindings()}
    found: list[tuple[str, Binding]] = []
    seen: set[type] = set()
    for cls in _subclasses(DOMNode):
        where = cls.__module__
        if cls in seen or not where.startswith("mergechat.") or where.startswith(_COMPARE_PACKAGE):
            continue
        seen.add(cls)
        for binding in cls.__dict__.get("BINDINGS", []):
            if isinstance(binding, Binding) and binding.id and id(binding) not in main:
                found.append((cls.__name__.removesuffix("Screen"), binding))
    return found


def unknown_keymap_ids(keymap: Mapping[str, str]) -> list[str]:
    """Keymap entries that name no binding (reported to the user, then ignored by Textual)."""
    known = {b.id for b in main_bindings()} | {b.id for _, b in dialog_bindings()} | compare_ids()
    return sorted(key for key in keymap if key not in known)


def binding_keys(binding: Binding, keymap: Mapping[str, str]) -> str:
    """The keys ``binding`` has with ``keymap`` applied, as the help lists them."""
    keys = keymap.get(binding.id, binding.key) if binding.id else binding.key
    return ", ".join(k.strip() for k in keys.split(","))


def _conflicts(keymap: Mapping[str, str]) -> list[tuple[str, list[Binding]]]:
    """(key, bindings) for each key the keymap gives to two actions that are active together.

    The chat screen's prompt, screen and app keys are active together; each dialog's own keys
    too. Only clashes the keymap made are reported (the defaults' overlaps are deliberate).
    """
    scopes: dict[str, list[Binding]] = {"": main_bindings()}
    for owner, binding in dialog_bindings():
        scopes.setdefault(owner, []).append(binding)
    found: list[tuple[str, list[Binding]]] = []
    for bindings in scopes.values():
        by_key: dict[str, list[Binding]] = {}
        for binding in bindings:
            for key in binding_keys(binding, keymap).split(", "):
                holders = by_key.setdefault(key.lower(), [])
                if all(b.id != binding.id for b in holders):
                    holders.append(binding)
        found += [
            (key, holders)
            for key, holders in by_key.items()
            if len(holders) > 1 and any(b.id in keymap for b in holders)
        ]
    return found


def keymap_problems(keymap: Mapping[str, str]) -> list[str]:
    """One line per keymap entry that names no binding and per key given to two actions.

    Imports every screen module (call it after the first frame, or outside the app).
    """
    unknown = unknown_keymap_ids(keymap)
    lines = [f"keymap: no key binding has the id {i!r}; ignored" for i in unknown]
    for key, holders in _conflicts(keymap):
        named = " and ".join(f"{b.id!r} ({b.description})" for b in holders)
        lines.append(
            f"keymap: {key} is given to both {named}: only one of them gets it; "
            "change one of them in [keymap]"
        )
    return lines


def prompt_placeholder(keymap: Mapping[str, str]) -> str:
    """The prompt's hint, naming the send and newline keys the keymap gives them."""
    send = keymap.get("send", "enter").split(",")[0].strip()
    newline = keymap.get("newline", "ctrl+j").split(",")[0].strip()
    send = "Enter" if send.lower() == "enter" else send
    return f"Message ({send} sends, {newline} newline)"


def help_rows(keymap: Mapping[str, str]) -> list[tuple[str, str]]:
    """(keys, description) for the help screen, with the user's keymap applied; a key given to
    two actions says so beside each."""
    clash = {id(b) for _, holders in _conflicts(keymap) for b in holders}

    def row(binding: Binding, description: str) -> tuple[str, str]:
        mark = " (key conflict: see Problems)" if id(binding) in clash else ""
        return binding_keys(binding, keymap), description + mark

    rows = [row(b, b.description) for b in main_bindings()]
    rows += [row(b, f"{owner}: {b.description}") for owner, b in dialog_bindings() if b.description]
    return rows
