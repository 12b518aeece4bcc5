"""The API key for a server: from the environment or the config file, never a flag.

The key is only ever handed to the HTTP client: it is not part of any event, state, history row
or export, and error messages never quote it.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from mergechat.core.settings import locations

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Looked up in this order; the first that is set and not empty wins.
KEY_VARIABLES = ("MERGECHAT_API_KEY", "OPENAI_API_KEY")
CONFIG_TABLE = "remote"
CONFIG_KEY = "api_key"


@dataclass(frozen=True)
class ApiKey:
    """A key and where it came from (the source is safe to show; the key is not)."""

    value: str | None
    source: str = "none"
    #: A reason to worry about how the key is kept (a config file others can read).
    warning: str | None = None


def find_api_key(config_path: Path | None = None) -> ApiKey:
    """The key from ``MERGECHAT_API_KEY``, ``OPENAI_API_KEY`` or ``[remote] api_key``."""
    for name in KEY_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return ApiKey(value, name)
    path = config_path or locations.config_file()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8").removeprefix("\ufeff"))
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return ApiKey(None)  # the config loader reports what is wrong with the file
    table = document.get(CONFIG_TABLE)
    found: object = table.get(CONFIG_KEY) if isinstance(table, dict) else None
    if not isinstance(found, str) or not found.strip():
        return ApiKey(None)
    warning: str | None = None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warning = f"{path} holds an API key and other users can read it: chmod 600 {path}"
    return ApiKey(found.strip(), f"{path} [{CONFIG_TABLE}] {CONFIG_KEY}", warning)
