"""What went wrong talking to a server, as one plain line: exit 2 for a wrong URL, model or key,
exit 1 when the server or the network fails. Server text in messages is escaped."""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error

from mergechat.core.errors import BadInputError, MergechatError
from mergechat.core.model.target import RemoteTarget
from mergechat.core.visible import escape_control

KEY_HINT = "set MERGECHAT_API_KEY (or OPENAI_API_KEY, or [remote] api_key in the config file)"


def server_text(text: object, limit: int = 200) -> str:
    """Text from a server, safe to show: control characters escaped, one line, cut short."""
    line = " ".join(escape_control(str(text)).split())
    return line if len(line) <= limit else line[:limit] + "..."


def status_error(target: RemoteTarget, what: str, status: int, body: str = "") -> MergechatError:
    """The error for an HTTP status answered to ``what`` (``GET /v1/models``...)."""
    detail = f": {server_text(body)}" if body.strip() else ""
    where = f"{target.host_port} answered HTTP {status} to {what}{detail}"
    if status in (401, 403):
        return BadInputError(f"{where} (the API key is missing or refused)", KEY_HINT)
    if status in (404, 405):
        return BadInputError(
            f"{where}: no OpenAI-compatible API at {target.base_url}",
            "check the URL's path: most servers serve it under /v1",
        )
    return MergechatError(where, "the server's own log says why")


def transport_error(target: RemoteTarget, error: BaseException) -> MergechatError:
    """The error for a request that got no HTTP answer (refused, timed out, wrong protocol)."""
    reason = getattr(error, "reason", error)
    if isinstance(reason, ssl.SSLError) or "SSL" in type(reason).__name__:
        return BadInputError(
            f"{target.host_port} does not speak HTTPS ({server_text(reason)})",
            f"use http://{target.host_port} if the server is plain HTTP",
        )
    if isinstance(reason, http.client.BadStatusLine | http.client.RemoteDisconnected):
        hint = "if the server uses HTTPS, use https:// in the URL"
        if target.scheme == "http":
            return BadInputError(f"{target.host_port} did not answer in HTTP", hint)
        return MergechatError(f"{target.host_port} closed the connection without an answer")
    if isinstance(reason, TimeoutError | socket.timeout):
        return MergechatError(
            f"{target.host_port} did not answer in time", "is the server still loading its model?"
        )
    if isinstance(reason, ConnectionRefusedError):
        return MergechatError(
            f"cannot reach {target.host_port}: connection refused",
            "is the server running, and on this port?",
        )
    if isinstance(reason, socket.gaierror):
        return BadInputError(f"cannot reach {target.host_port}: unknown host name")
    return MergechatError(f"cannot reach {target.host_port}: {server_text(reason)}")


def fetch_error(target: RemoteTarget, what: str, error: Exception) -> MergechatError:
    """Map a urllib failure of ``what`` to a `MergechatError`."""
    if isinstance(error, urllib.error.HTTPError):
        try:
            body = error.read(2000).decode("utf-8", "replace")
        except OSError:
            body = ""
        return status_error(target, what, error.code, body)
    return transport_error(target, error)
