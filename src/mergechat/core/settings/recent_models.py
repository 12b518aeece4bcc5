"""The recently opened models, kept in the state file so that loading a model never rewrites
the user's ``config.toml``."""

from __future__ import annotations

import json
from pathlib import Path

from mergechat.core.model.target import model_key
from mergechat.core.settings import locations
from mergechat.core.settings.atomic import atomic_write

MAX_RECENT_MODELS = 10


def load_recent(legacy: list[str], path: Path | None = None) -> list[str]:
    """The recent models from the state file; ``legacy`` (an older config's list) until the state
    file has one. An unreadable or damaged state file counts as empty: it is only a convenience."""
    path = path or locations.state_file()
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return list(legacy)
    except (OSError, ValueError):
        return []
    recent = state.get("recent_models") if isinstance(state, dict) else None
    if not isinstance(recent, list):
        return []
    kept: dict[str, str] = {}
    for item in recent:
        if isinstance(item, str) and item.strip() and "\x00" not in item:
            kept.setdefault(model_key(item), item)
    return list(kept.values())[:MAX_RECENT_MODELS]


def remember(recent: list[str], model: str | Path, path: Path | None = None) -> list[str]:
    """``recent`` with ``model`` first (max 10), saved to the state file (0600) when possible."""
    if not str(model).strip():
        return recent
    entry = model_key(model)
    updated = [entry, *(p for p in recent if model_key(p) != entry)][:MAX_RECENT_MODELS]
    path = path or locations.state_file()
    text = json.dumps({"recent_models": updated}, ensure_ascii=False, indent=1) + "\n"
    try:
        locations.ensure_private_dir(path.parent)
        atomic_write(path, text.encode("utf-8", "surrogatepass"))
    except (OSError, UnicodeEncodeError):
        pass  # a read-only data folder: the list is still right for this session
    return updated
