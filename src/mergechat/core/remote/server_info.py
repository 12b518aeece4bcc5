"""What a server says it runs: its models (``/v1/models``) and, where the engine tells, the
precision, device and context limit (TGI ``/info``, llama.cpp ``/props``, ollama ``/api/ps``,
vLLM's ``max_model_len``), or what `mergechat serve` passed to a server on this machine. Nothing
is guessed: an engine that says nothing gets None."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mergechat.core.dtypes import normalize_dtype
from mergechat.core.errors import BadInputError, MergechatError
from mergechat.core.model.target import RemoteTarget
from mergechat.core.remote.faults import fetch_error, server_text

NOT_REPORTED = "precision not reported by the server"
#: Seconds for each engine-specific look-up (a server without the endpoint answers 404 at once).
PROBE_TIMEOUT_S = 3.0
#: GGUF quantisation names as llama.cpp writes them in file names (Q4_K_M, IQ3_XS, BF16...).
_GGUF_TYPE = re.compile(r"(?<![A-Za-z0-9])(I?Q\d[A-Z0-9_]*|BF16|F16|F32)(?=[.\-]|$)", re.I)


@dataclass(frozen=True)
class ServerInfo:
    """The served model and what the server reported about it (None: not reported)."""

    model: str
    models: tuple[str, ...] = ()
    engine: str | None = None
    dtype: str | None = None
    device: str | None = None
    context_max: int | None = None

    def device_label(self, target: RemoteTarget) -> str:
        """``host:port · device`` for the status bar; says so when the precision is unknown."""
        parts = [target.host_port, self.device or ""]
        if self.dtype is None:
            parts.append(NOT_REPORTED)
        return " · ".join(part for part in parts if part)


def fetch_json(target: RemoteTarget, url: str, key: str | None, timeout: float) -> Any:
    """GET ``url`` and parse its JSON; raise `MergechatError` (or `BadInputError`) otherwise."""
    what = "GET " + url.removeprefix(target.root_url)
    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            kind = response.headers.get_content_type()
            body = response.read(4_000_000)
    except Exception as error:  # urllib's errors, ssl, sockets: one mapping for all
        raise fetch_error(target, what, error) from None
    try:
        return json.loads(body)
    except ValueError:
        raise BadInputError(
            f"{target.base_url} is not an OpenAI-compatible server: {what} answered {kind}, "
            "not JSON",
            "check the URL: it should end in the API's root, usually /v1",
        ) from None


def list_models(
    target: RemoteTarget, key: str | None, timeout: float
) -> dict[str, Mapping[str, Any]]:
    """The served models by id, each with the metadata the server gave for it."""
    found = fetch_json(target, f"{target.base_url}/models", key, timeout)
    data = found.get("data") if isinstance(found, dict) else None
    if not isinstance(data, list):
        raise BadInputError(
            f"{target.base_url} is not an OpenAI-compatible server: GET /models has no model list"
        )
    models: dict[str, Mapping[str, Any]] = {
        str(entry["id"]): entry for entry in data if isinstance(entry, dict) and "id" in entry
    }
    if not models:
        raise MergechatError(
            f"the server at {target.host_port} lists no models",
            "start it with a model (its own log says why it has none)",
        )
    return models


def choose_model(target: RemoteTarget, models: Mapping[str, object]) -> str:
    """``target.model`` when served (exit 2 otherwise), else the first model listed."""
    if target.model is None:
        return next(iter(models))
    if target.model in models:
        return target.model
    served = ", ".join(server_text(name, 80) for name in list(models)[:10])
    raise BadInputError(
        f"model {server_text(target.model, 80)!r} is not served by {target.host_port}",
        f"it serves: {served}",
    )


def describe(
    target: RemoteTarget, model: str, models: Mapping[str, Mapping[str, Any]], key: str | None
) -> ServerInfo:
    """Ask the engine-specific endpoints what runs ``model``; every look-up may fail quietly."""
    entry = models.get(model, {})
    info: dict[str, Any] = {}
    if isinstance(entry.get("max_model_len"), int):  # vLLM
        info.update(engine="vLLM", context_max=entry["max_model_len"])
    tgi = _probe(target, "/info", key)
    if tgi is not None and ("model_dtype" in tgi or "model_device_type" in tgi):
        info.update(
            engine="TGI",
            dtype=_dtype_text(tgi.get("model_dtype")),
            device=_text(tgi.get("model_device_type")),
            context_max=_int(tgi.get("max_total_tokens")) or info.get("context_max"),
        )
    props = _probe(target, "/props", key) if "engine" not in info else None
    if props is not None and ("default_generation_settings" in props or "model_path" in props):
        info.update(engine="llama.cpp", **_llama_cpp(props, entry))
    ps = _probe(target, "/api/ps", key) if "engine" not in info else None
    if ps is not None and isinstance(ps.get("models"), list):
        info.update(engine="ollama", **_ollama(ps["models"], model))
    info.update(_served_here(target, model))
    values = {name: value for name, value in info.items() if value is not None}
    return ServerInfo(model, tuple(models), **values)


def _served_here(target: RemoteTarget, model: str) -> dict[str, Any]:
    """What `mergechat serve` passed to the engine on this machine's port (vLLM and
    ``transformers serve`` do not report it themselves)."""
    if not target.loopback:
        return {}
    from mergechat.core.settings import served_record

    entry = served_record.lookup(target.port)
    if entry is None or entry.get("model") not in (None, model):
        return {}
    found = {
        "engine": f"{_text(entry.get('engine')) or 'a server'} started by mergechat serve",
        "dtype": _dtype_text(entry.get("dtype")),
        "device": _text(entry.get("device")),
    }
    return {name: value for name, value in found.items() if value is not None}


def _probe(target: RemoteTarget, path: str, key: str | None) -> dict[str, Any] | None:
    try:
        found = fetch_json(target, target.root_url + path, key, PROBE_TIMEOUT_S)
    except MergechatError:
        return None
    return found if isinstance(found, dict) else None


def _llama_cpp(props: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    settings = props.get("default_generation_settings")
    meta = entry.get("meta")
    context = _int(settings.get("n_ctx")) if isinstance(settings, dict) else None
    if context is None and isinstance(meta, dict):
        context = _int(meta.get("n_ctx_train"))
    # llama.cpp reports the GGUF file it serves; its name carries the quantisation type.
    found = _GGUF_TYPE.search(str(props.get("model_path", "")).rsplit("/", 1)[-1])
    dtype = f"{found.group(1).upper()} (GGUF)" if found else None
    return {"dtype": dtype, "context_max": context}


def _ollama(running: list[Any], model: str) -> dict[str, Any]:
    for item in running:
        if not isinstance(item, dict) or model not in (item.get("name"), item.get("model")):
            continue
        details = item.get("details")
        level = details.get("quantization_level") if isinstance(details, dict) else None
        size, vram = _int(item.get("size")), _int(item.get("size_vram"))
        device = None
        if size and vram is not None:
            share = round(100 * vram / size)
            device = "cpu" if share == 0 else f"gpu {share}%" + ("" if share >= 100 else " + cpu")
        return {
            "dtype": _text(level),
            "device": device,
            "context_max": _int(item.get("context_length")),
        }
    return {}


def _dtype_text(value: object) -> str | None:
    if value is None:
        return None
    return normalize_dtype(str(value)) or _text(value)


def _text(value: object) -> str | None:
    return server_text(value, 40) if isinstance(value, str) and value.strip() else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
