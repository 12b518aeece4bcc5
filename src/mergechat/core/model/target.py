"""Where a served model lives: a checked ``http(s)://host:port[/v1]`` URL and its model id.

A remote model travels through the app as a model "path" (`RemotePath`: the URL with the model
id as fragment), so history, recent models and the settings screen need no second field.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path, PosixPath
from urllib.parse import urlsplit

from mergechat.core.errors import BadInputError

#: A URL, also after `pathlib` collapsed its ``//`` into ``/``.
_URL_START = re.compile(r"^(https?):/+", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def looks_remote(value: str | PathLike[str]) -> bool:
    """True for ``http://...`` or ``https://...`` (also as a `Path`, which keeps one slash)."""
    return bool(_URL_START.match(str(value)))


def url_text(value: str | PathLike[str]) -> str:
    """The URL written by ``value`` with its ``scheme://`` restored."""
    return _URL_START.sub(lambda m: f"{m.group(1).lower()}://", str(value), count=1)


def model_key(path: str | PathLike[str] | None) -> str:
    """The form a model is stored and compared in (history, recent models, settings): a server's
    URL as written, or the path absolute and resolved; "" for none.

    A path is data: one that cannot exist here (a NUL, ~unknown-user, a name too long, a symlink
    loop) keeps its absolute form instead of raising.
    """
    if not path:
        return ""
    if looks_remote(path):
        return url_text(path)  # a served model: its URL (with the model id), not a file
    text = os.path.expanduser(os.fspath(path))
    try:
        return str(Path(text).resolve())
    except (OSError, ValueError, RuntimeError):
        return os.path.abspath(text)


class RemotePath(PosixPath):
    """A `Path` whose text is the whole URL (``http://host:port/v1#model``), for history and
    recent models; `pathlib` would print ``http:/host...``."""

    def __str__(self) -> str:
        return url_text(super().__str__())

    def __fspath__(self) -> str:
        return str(self)


@dataclass(frozen=True)
class RemoteTarget:
    """A checked server URL: ``base_url`` is what the OpenAI client gets (``.../v1``)."""

    scheme: str
    host: str
    port: int
    base_url: str
    #: The model id asked for (``--model`` or the URL's fragment); None: the server's first.
    model: str | None = None

    @property
    def host_port(self) -> str:
        """``host:port`` as the status bar shows it (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def root_url(self) -> str:
        """``scheme://host:port``: where engine-specific endpoints (``/info``, ``/props``) are."""
        return f"{self.scheme}://{self.host_port}"

    @property
    def loopback(self) -> bool:
        """True when the server is on this machine (plain HTTP is then fine)."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def path(self, model: str | None = None) -> RemotePath:
        """The model "path" the app, history and recent models keep for this server and model."""
        chosen = model or self.model
        return RemotePath(f"{self.base_url}#{chosen}" if chosen else self.base_url)

    def plain_http_warning(self) -> str | None:
        """The warning for unencrypted HTTP to another machine (None when not needed)."""
        if self.scheme == "https" or self.loopback:
            return None
        return (
            f"{self.host_port} is reached over plain http://: the prompts, the replies and any "
            "API key cross the network unencrypted (use https:// or an SSH tunnel to 127.0.0.1)"
        )


def parse_target(text: str, model: str | None = None) -> RemoteTarget:
    """Check ``text`` as a server URL; raise `BadInputError` (exit 2) with what is wrong.

    The fragment, when there is one, names the model (``--model`` wins over it).
    """
    shown = text if len(text) < 200 else text[:200] + "..."
    hint = "give it as http(s)://host:port or http(s)://host:port/v1"
    try:
        parts = urlsplit(url_text(text.strip()))
        port = parts.port
    except ValueError as error:
        raise BadInputError(f"invalid server URL {shown!r}: {error}", hint) from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise BadInputError(f"invalid server URL {shown!r}: only http and https are served", hint)
    if not parts.hostname:
        raise BadInputError(f"invalid server URL {shown!r}: no host name", hint)
    if parts.username is not None or parts.password is not None:
        raise BadInputError(
            "a server URL must not hold a user name or key",
            "put the key in MERGECHAT_API_KEY (or [remote] api_key in the config file)",
        )
    if parts.query:
        raise BadInputError(f"invalid server URL {shown!r}: a query (?...) is not used", hint)
    path = parts.path.rstrip("/") or "/v1"
    host = parts.hostname
    port = port or _DEFAULT_PORTS[scheme]
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return RemoteTarget(
        scheme=scheme,
        host=host,
        port=port,
        base_url=f"{scheme}://{netloc}{path}",
        model=model or parts.fragment or None,
    )


def target_of(path: str | PathLike[str]) -> RemoteTarget:
    """The target a model "path" (`RemotePath`, or a plain `Path` of a URL) stands for."""
    return parse_target(url_text(path))


def precision_help(path: str | PathLike[str] | None) -> str:
    """Why a served model's precision cannot be switched here, and how to change it."""
    where = ""
    if path is not None and looks_remote(path):
        with contextlib.suppress(BadInputError):
            where = f" at {target_of(path).host_port}"
    return (
        f"The server{where} fixes the precision: restart it with another one, e.g. "
        "`mergechat serve PATH --dtype float16`, `vllm serve PATH --dtype float16`, TGI's "
        "`--dtype float16`, or another GGUF file (quantisation) for llama.cpp and ollama."
    )


def shown_model(path: str | PathLike[str] | None) -> str:
    """The name the status bar shows before a load: ``host:port model`` or the folder's name."""
    if path is None:
        return ""
    if looks_remote(path):
        try:
            target = target_of(path)
        except BadInputError:
            return url_text(path)
        return f"{target.host_port} {target.model or ''}".strip()
    return Path(path).name
