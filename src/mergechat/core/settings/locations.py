"""Every path mergechat reads or writes, from platformdirs, each with an environment override."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "mergechat"

#: Environment variables that override the platform's directories (useful for tests and CI).
ENV_CONFIG_FILE = "MERGECHAT_CONFIG"
ENV_CONFIG_DIR = "MERGECHAT_CONFIG_DIR"
ENV_CACHE_DIR = "MERGECHAT_CACHE_DIR"
ENV_DATA_DIR = "MERGECHAT_DATA_DIR"


def _from_env(var: str) -> Path | None:
    value = os.environ.get(var)
    # os.path.expanduser leaves ``~unknown-user`` as it is; Path.expanduser would raise.
    return Path(os.path.expanduser(value)) if value else None


def config_dir() -> Path:
    """Directory of ``config.toml`` and the user's ``themes/``."""
    return _from_env(ENV_CONFIG_DIR) or Path(platformdirs.user_config_dir(APP_NAME))


def config_file() -> Path:
    """The config file: ``$MERGECHAT_CONFIG`` or ``<config dir>/config.toml``."""
    return _from_env(ENV_CONFIG_FILE) or config_dir() / "config.toml"


def user_themes_dir() -> Path:
    """Where users drop their own theme files (TOML)."""
    return config_dir() / "themes"


def cache_dir() -> Path:
    """Cache for probe results and converted models; safe to delete."""
    return _from_env(ENV_CACHE_DIR) or Path(platformdirs.user_cache_dir(APP_NAME))


def probe_cache_file() -> Path:
    """JSON file holding the capability probe results per machine and torch version."""
    return cache_dir() / "probes.json"


def data_dir() -> Path:
    """Persistent user data (conversation history)."""
    return _from_env(ENV_DATA_DIR) or Path(platformdirs.user_data_dir(APP_NAME))


def exposed_files() -> list[str]:
    """One line for each of mergechat's user files or folders that other users can read.

    mergechat creates them user-only; a config written by hand or a folder made by another tool
    may be wider, and the history holds every conversation. The modes are reported, not changed.
    """
    found = []
    candidates = (config_file(), config_dir(), data_dir(), history_file())
    for path in dict.fromkeys(candidates):
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            continue  # not created yet, or not readable: nothing to warn about
        if mode & 0o077:
            fix = "chmod 700" if path.is_dir() else "chmod 600"
            found.append(f"{path} can be read by other users (mode {mode:o}); {fix} it")
    return found


def state_file() -> Path:
    """Machine state mergechat keeps between runs (the recent models): never the user's config."""
    return data_dir() / "state.json"


def history_file() -> Path:
    """The conversation history database: ``<data dir>/history.sqlite3``."""
    return data_dir() / "history.sqlite3"


def builtin_themes_dir() -> Path:
    """The themes shipped with mergechat: inside the wheel, or ``themes/`` of a source checkout."""
    package = Path(__file__).resolve().parents[2]  # src/mergechat (this is core/settings/)
    packaged = package / "themes"
    if packaged.is_dir():
        return packaged
    return package.parents[1] / "themes"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) readable only by the user; return it.

    ``path`` and every folder created here that is mergechat's own (the config, cache or data
    dir, or inside one) get mode 0700 whatever the umask; parents above those (``~/.cache``)
    get the usual mode. Folders that already exist keep their mode (a user's choice).
    """
    target = Path(os.path.abspath(path))
    missing: list[Path] = []
    current = target
    while not current.exists() and current.parent != current:
        missing.append(current)
        current = current.parent
    own = _own_dirs()
    for folder in reversed(missing):
        private = folder == target or any(folder == b or b in folder.parents for b in own)
        try:
            folder.mkdir(mode=0o700 if private else 0o777)
        except FileExistsError:  # another process made it meanwhile
            continue
        if private:
            os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
    if not target.is_dir():
        target.mkdir(parents=True, exist_ok=True, mode=0o700)  # raises the right OSError
    return path


def _own_dirs() -> tuple[Path, ...]:
    bases = {config_dir(), cache_dir(), data_dir(), config_file().parent}
    return tuple(Path(os.path.abspath(base)) for base in bases)
