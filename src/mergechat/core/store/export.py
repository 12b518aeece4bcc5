"""Export a stored conversation as Markdown (for people) or JSON (everything in the store)."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Final, Literal

import platformdirs

from mergechat import __version__
from mergechat.core.errors import MergechatError
from mergechat.core.markdown_blocks import close_open_fence
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.records import Conversation, StoredMessage
from mergechat.core.store.schema import LATEST_VERSION
from mergechat.core.visible import escape_control

ExportFormat = Literal["md", "json"]
JSON_FORMAT_NAME: Final = "mergechat.conversation"
JSON_FORMAT_VERSION: Final = 1

_ROLE_HEADINGS: Final = {"user": "You", "assistant": "Assistant", "system": "System"}
_ENDINGS: Final = {
    "stopped": "stopped by the user",
    "failed": "failed",
    "streaming": "interrupted (the reply was still streaming when it was last saved)",
}


def _local(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def inline_code(text: str) -> str:
    """``text`` as one Markdown code span, whatever backticks or control characters it holds."""
    shown = escape_control(text)
    ticks = "`" * (max((len(run) for run in re.findall(r"`+", shown)), default=0) + 1)
    pad = " " if shown.startswith("`") or shown.endswith("`") else ""
    return f"{ticks}{pad}{shown}{pad}{ticks}"


def format_parameters(params: GenerationSettings) -> str:
    """``temperature 0.7 · max_new_tokens 512``: the values set (None means the model default)."""
    parts = [
        f"{field.name} {_number(value)}"
        for field in dataclasses.fields(params)
        if field.name != "system_prompt" and (value := getattr(params, field.name)) is not None
    ]
    return " · ".join(parts)


def reply_details(message: StoredMessage, conversation_model: str = "") -> list[str]:
    """The Markdown bullet lines that say what produced an assistant reply, and how fast."""
    lines = []
    model = message.model_path or conversation_model
    if model:
        lines.append(f"- Model: {inline_code(model)}")
    if message.device or message.dtype:
        lines.append(f"- Device: {message.device or '?'} · Precision: {message.dtype or '?'}")
    settings = message.generation_settings()
    if settings is not None:
        lines.append(f"- Parameters: {format_parameters(settings) or 'model defaults'}")
        if settings.system_prompt:
            lines.append(f"- System prompt: {' '.join(settings.system_prompt.split())}")
    if message.new_tokens is not None:
        tokens = [f"{message.prompt_tokens} prompt", f"{message.new_tokens} new"]
        if message.tokens_per_s is not None:
            tokens.append(f"{message.tokens_per_s:.1f} tok/s")
        if message.ttft_s is not None:
            tokens.append(f"first token {message.ttft_s:.2f} s")
        if message.total_s is not None:
            tokens.append(f"{message.total_s:.2f} s total")
        lines.append(f"- Tokens: {' · '.join(tokens)}")
    if message.state in _ENDINGS:
        ending = _ENDINGS[message.state]
        lines.append(f"- Ended: {ending}" + (f": {message.error}" if message.error else ""))
    elif message.finish_reason == "length":
        lines.append("- Ended: reached max_new_tokens")
    return lines


def _model_name(model_path: str) -> str:
    """A model's short name: its folder or file name, or a server's whole URL."""
    return model_path if "://" in model_path else Path(model_path).name or model_path


def to_markdown(conversation: Conversation) -> str:
    """A readable transcript; each reply names its model, device, precision and parameters."""
    out = [
        f"# {conversation.title}",
        "",
        f"- Conversation: {conversation.id}",
        f"- Model: {inline_code(conversation.model_path or 'unknown')}",
        f"- Started: {_local(conversation.created)} · Updated: {_local(conversation.updated)}",
        f"- Exported by mergechat {__version__} on {_local(datetime.now().timestamp())}",
        "",
    ]
    # A comparison (replies from several models) heads each reply with its model's name.
    models = {m.model_path for m in conversation.messages if m.role == "assistant"}
    several = len(models - {None, ""}) > 1
    for message in conversation.messages:
        heading = _ROLE_HEADINGS[message.role]
        if several and message.role == "assistant" and message.model_path:
            heading = escape_control(_model_name(message.model_path))
        out += [f"## {heading} · {_local(message.created)}", ""]
        out += [close_open_fence(message.text.rstrip()) or "*(no text)*", ""]
        if message.role == "assistant":
            # A quote block keeps the details apart from a list that may end the reply.
            details = reply_details(message, conversation.model_path)
            out += [*(f"> {line}" for line in details), ""] if details else []
    return "\n".join(out).rstrip() + "\n"


def to_dict(conversation: Conversation) -> dict[str, object]:
    """Everything the store holds about ``conversation``, as JSON-ready data."""
    messages = []
    for message in conversation.messages:
        item = dataclasses.asdict(message)
        item["created"] = _iso(message.created)
        messages.append(item)
    return {
        "format": JSON_FORMAT_NAME,
        "format_version": JSON_FORMAT_VERSION,
        "schema_version": LATEST_VERSION,
        "mergechat_version": __version__,
        "exported": _iso(datetime.now().timestamp()),
        "conversation": {
            "id": conversation.id,
            "title": conversation.title,
            "renamed": conversation.renamed,
            "model_path": conversation.model_path,
            "created": _iso(conversation.created),
            "updated": _iso(conversation.updated),
            "messages": messages,
        },
    }


def to_json(conversation: Conversation) -> str:
    """`to_dict` as indented JSON text (UTF-8 characters kept as they are)."""
    return json.dumps(to_dict(conversation), indent=2, ensure_ascii=False) + "\n"


def render(conversation: Conversation, fmt: ExportFormat) -> str:
    """The export text in format ``md`` or ``json``."""
    return to_json(conversation) if fmt == "json" else to_markdown(conversation)


def default_export_dir() -> Path:
    """The user's documents folder, or the current folder when there is none (headless servers)."""
    documents = Path(platformdirs.user_documents_dir())
    return documents if documents.is_dir() else Path.cwd()


def default_filename(conversation: Conversation, fmt: ExportFormat) -> str:
    """``mergechat-<id>-<title-slug>.<fmt>``."""
    slug = re.sub(r"[^a-z0-9]+", "-", conversation.title.lower()).strip("-")[:40].rstrip("-")
    return f"mergechat-{conversation.id}{'-' + slug if slug else ''}.{fmt}"


def write_export(
    conversation: Conversation, fmt: ExportFormat, path: str | Path | None = None
) -> Path:
    """Write the export to ``path`` (a file or a folder; default `default_export_dir`).

    Returns the file written. Raises `MergechatError` when it cannot be written.
    """
    target = Path(path).expanduser() if path is not None else default_export_dir()
    if target.is_dir():
        target = target / default_filename(conversation, fmt)
    try:
        target.write_text(render(conversation, fmt), encoding="utf-8")
    except OSError as exc:
        raise MergechatError(
            f"cannot write the export to {target}: {exc.strerror or exc}",
            "choose another file with -o" if path is not None else None,
        ) from exc
    return target
