"""The hint an empty chat shows: what to do first, with the keys the user's keymap really binds."""

from __future__ import annotations

from textual.content import Content
from textual.screen import Screen

#: (action, what it does) in the order the hint names them; the send key comes first.
_ACTIONS: tuple[tuple[str, str], ...] = (
    ("settings", "settings"),
    ("precision", "precision"),
    ("conversations", "conversations"),
    ("help", "help"),
)
_NAMES = {"enter": "Enter", "escape": "Esc", "tab": "Tab", "space": "Space"}


def key_name(key: str) -> str:
    """``f2`` -> ``F2``, ``enter`` -> ``Enter``; ``ctrl+t`` stays as it is."""
    if key in _NAMES:
        return _NAMES[key]
    if key[:1] == "f" and key[1:].isdigit():
        return key.upper()
    return key


def bound_keys(screen: Screen[object]) -> dict[str, str]:
    """action -> the first key bound to it on ``screen`` now (user keymap applied)."""
    keys: dict[str, str] = {}
    for key, active in screen.active_bindings.items():
        keys.setdefault(active.binding.action, key_name(key))
    return keys


def hint_text(keys: dict[str, str]) -> Content:
    """``Type a message and press Enter ...`` then ``F2 settings · ...``: actions with a key."""
    send = keys.get("submit")
    first = f"Type a message and press {send} to send it." if send else "Type a message."
    rest = " · ".join(f"{keys[action]} {what}" for action, what in _ACTIONS if action in keys)
    return Content.styled(f"{first}\n{rest}" if rest else first, "$text-muted")
