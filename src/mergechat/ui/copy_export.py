"""The chat's copy and export actions: what to copy or write, and the notices that confirm it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from textual.app import App

from mergechat.core.api import ChatMessage
from mergechat.core.errors import MergechatError
from mergechat.core.store.export import ExportFormat
from mergechat.core.store.export_paths import free_path
from mergechat.core.store.recorder import ChatRecorder
from mergechat.core.store.records import Conversation
from mergechat.ui.clipboard import (
    CopyMenu,
    CopyTarget,
    copy_targets,
    copy_text,
    last_reply,
    message_targets,
)

_FORMAT_NAMES: dict[ExportFormat, str] = {"md": "Markdown", "json": "JSON"}


def copy_last_reply(app: App[Any], messages: Sequence[ChatMessage]) -> None:
    """Copy the newest reply that has text (OSC 52) and confirm, or say there is none."""
    text = last_reply(messages)
    if text is None:
        app.notify("There is no reply to copy yet.", severity="warning")
        return
    copy_text(app, text, "the last reply")


def open_copy_menu(app: App[Any], messages: Sequence[ChatMessage]) -> None:
    """Choose a message (newest first), then, when it has code blocks, the part to copy."""
    targets = message_targets(messages)
    if not targets:
        app.notify("There is nothing to copy yet.", severity="warning")
        return

    def message_chosen(target: CopyTarget | None) -> None:
        if target is None:
            return
        what = "reply" if target.label.startswith("Assistant") else "message"
        parts = copy_targets(target.text, what)
        if len(parts) == 1:  # no code blocks: copy the message itself
            copy_text(app, target.text, f"the {what}")
        else:
            app.push_screen(CopyMenu(parts, f"Copy from the {what}"), part_chosen)

    def part_chosen(target: CopyTarget | None) -> None:
        if target is not None:
            what = "code block" if target.label.startswith("Code block") else "message"
            copy_text(app, target.text, f"the {what}")

    app.push_screen(CopyMenu(targets, "Copy which message"), message_chosen)


def saved_conversation(app: App[Any], history: ChatRecorder) -> Conversation | None:
    """The current conversation as stored (a streaming reply saved first); None with a notice."""
    store = history.store
    if store is None:
        app.notify(
            "History is off, so there is no saved conversation to export.", severity="warning"
        )
        return None
    if history.conversation_id is None:
        app.notify("Nothing to export yet: send a message first.", severity="warning")
        return None
    history.flush(interrupted=False)
    try:
        return store.get_conversation(history.conversation_id)
    except MergechatError as exc:
        app.notify(str(exc), title="Export failed", severity="error", markup=False)
        return None


def export_conversation(
    app: App[Any], history: ChatRecorder, fmt: ExportFormat, path: Path | None = None
) -> Path | None:
    """Write the conversation as ``fmt`` to ``path``; notify. Without ``path`` (or with a
    folder) it goes to a new file in the documents folder (or that folder): never over one."""
    conversation = saved_conversation(app, history)
    if conversation is None:
        return None
    from mergechat.core.store.export import default_export_dir, default_filename, write_export

    folder = default_export_dir() if path is None else path if path.is_dir() else None
    if folder is not None:
        path = free_path(folder / default_filename(conversation, fmt))
    try:
        written = write_export(conversation, fmt, path)
    except MergechatError as exc:
        app.notify(str(exc), title="Export failed", severity="error", markup=False)
        return None
    app.notify(f"Exported as {_FORMAT_NAMES[fmt]} to {written}", title="Export", markup=False)
    return written


def open_export_dialog(app: App[Any], history: ChatRecorder) -> None:
    """Ask for the file (prefilled with a new Markdown file's name), then export there; a file
    that exists already is replaced only when the user says so."""
    conversation = saved_conversation(app, history)
    if conversation is None:
        return
    from mergechat.core.store.export import default_export_dir, default_filename
    from mergechat.ui.screens.confirm import ConfirmScreen
    from mergechat.ui.screens.export import ExportScreen, format_for

    default = free_path(default_export_dir() / default_filename(conversation, "md"))

    def chosen(path: Path | None) -> None:
        if path is None:
            return
        if path.is_dir() or not os.path.lexists(path):
            export_conversation(app, history, format_for(path), path)
            return

        def answered(replace: bool | None) -> None:
            if replace:
                export_conversation(app, history, format_for(path), path)
            else:
                app.notify("Not exported: the file was kept as it is.", markup=False)

        reasons = [f"{path} already exists: exporting replaces what it holds."]
        app.push_screen(ConfirmScreen("Replace the file?", reasons, yes="Replace"), answered)

    app.push_screen(ExportScreen(default), chosen)
