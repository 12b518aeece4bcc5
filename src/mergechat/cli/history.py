"""``mergechat history``: list, show, export and delete saved conversations."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from mergechat.core.errors import BadInputError
from mergechat.core.visible import escape_control

if TYPE_CHECKING:
    from mergechat.core.store.export import ExportFormat
    from mergechat.core.store.records import Conversation, ConversationSummary
    from mergechat.core.store.store import HistoryStore

EXIT_OK = 0
EMPTY_MESSAGE = "no conversations saved yet"


class _Parser(argparse.ArgumentParser):
    """Parse errors become a `BadInputError` (one ``mergechat: error:`` line, exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise BadInputError(message)


def _configure(parser: argparse.ArgumentParser) -> None:
    # cli.parse() reads .path and .debug on every subcommand's namespace.
    parser.set_defaults(path=None)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    # --debug is accepted after the action too (SUPPRESS: an absent flag keeps the outer value).
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    actions.add_parser("list", help="list conversations, most recent first", parents=[debug])
    show = actions.add_parser("show", help="print a conversation as Markdown", parents=[debug])
    _add_target(show)
    export = actions.add_parser(
        "export", help="write a conversation to a Markdown or JSON file", parents=[debug]
    )
    _add_target(export)
    export.add_argument(
        "--format", choices=("md", "json"), help="md (default) or json; -o FILE.json implies json"
    )
    export.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="file or folder to write (- for stdout); default: your documents folder",
    )
    delete = actions.add_parser("delete", help="delete a conversation", parents=[debug])
    delete.add_argument("id", metavar="ID", help="the conversation's id (see history list)")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", nargs="?", metavar="ID", help="the conversation's id (history list)")
    parser.add_argument("--last", action="store_true", help="the most recently updated one")


def build_history_parser() -> argparse.ArgumentParser:
    """The stand-alone parser of ``mergechat history ACTION ...`` (for cli.SUBCOMMANDS)."""
    parser = _Parser(
        prog="mergechat history",
        description="List, show, export and delete the conversations saved by the app.",
    )
    _configure(parser)
    return parser


def run_history(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Run the parsed ``history`` action; raise `BadInputError` (bad id, empty store) or
    `MergechatError` (database unusable). Returns the exit code."""
    from mergechat.core.store.store import HistoryStore, default_path

    stream = out or sys.stdout
    if not default_path().exists():
        raise BadInputError(EMPTY_MESSAGE)
    # Reading needs no write access (a read-only file, a full disk); only delete writes.
    opener = HistoryStore.open if args.action == "delete" else HistoryStore.open_read_only
    with opener() as store:
        summaries = store.list_conversations()
        if not summaries:
            raise BadInputError(EMPTY_MESSAGE)
        if args.action == "list":
            stream.write(format_list(summaries))
        elif args.action == "show":
            from mergechat.core.store.export import to_markdown

            # Stored text is shown, never acted on (an escape sequence could set the clipboard).
            text = to_markdown(_target(store, args, summaries))
            stream.write(escape_control(text, keep_lines=True))
        elif args.action == "export":
            _export(_target(store, args, summaries), args, stream)
        elif args.action == "delete":
            _delete(store, parse_id(args.id), args.yes, stream)
    stream.flush()
    return EXIT_OK


def parse_id(text: str) -> int:
    """A conversation id from the command line; raises `BadInputError` for anything else."""
    from mergechat.core.store.db import MAX_ID

    value = text.strip()
    if not (value.isascii() and value.isdigit()) or not value.strip("0"):
        raise BadInputError(f"a conversation id is a positive whole number, got {text!r}")
    value = value.lstrip("0")
    if len(value) > len(str(MAX_ID)) or int(value) > MAX_ID:  # more than SQLite can store
        shown = value if len(value) <= 30 else value[:30] + "…"
        raise BadInputError(f"no conversation with id {shown} (mergechat history list shows them)")
    return int(value)


def _target(
    store: HistoryStore, args: argparse.Namespace, summaries: list[ConversationSummary]
) -> Conversation:
    if args.last and args.id is not None:
        raise BadInputError("give either a conversation ID or --last, not both")
    if args.last:
        return store.get_conversation(summaries[0].id)
    if args.id is None:
        raise BadInputError(f"history {args.action} needs a conversation ID or --last")
    return store.get_conversation(parse_id(args.id))


def format_list(summaries: list[ConversationSummary]) -> str:
    """A table: id, last update, message count, model folder name, title (one line each)."""
    rows = [("ID", "UPDATED", "MSGS", "MODEL", "TITLE")]
    for s in summaries:
        updated = datetime.fromtimestamp(s.updated).strftime("%Y-%m-%d %H:%M")
        model, title = (escape_control(t) for t in (_model_name(s.model_path), s.title))
        rows.append((str(s.id), updated, str(s.message_count), model, title))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[0].rjust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2])]
        lines.append("  ".join([*cells, row[3].ljust(widths[3]), row[4]]).rstrip())
    return "\n".join(lines) + "\n"


def _model_name(model_path: str) -> str:
    return Path(model_path).name if model_path else "-"


def _export(conversation: Conversation, args: argparse.Namespace, stream: TextIO) -> None:
    from mergechat.core.store.export import render, write_export

    output: str | None = args.output
    fmt: ExportFormat = args.format or (
        "json" if output and output.lower().endswith(".json") else "md"
    )
    if output == "-":
        text = render(conversation, fmt)
        # Raw bytes for a pipe or a file; on a terminal, escapes are shown, never acted on (in
        # JSON a control character becomes a valid \uXXXX escape).
        stream.write(escape_control(text, keep_lines=True) if stream.isatty() else text)
        return
    written = write_export(conversation, fmt, _new_file(conversation, fmt, output))
    shown = escape_control(str(written), keep_lines=True)
    stream.write(f"exported conversation {conversation.id} to {shown}\n")


def _new_file(conversation: Conversation, fmt: ExportFormat, output: str | None) -> Path:
    """``-o FILE`` as given (the user's choice); for a folder or none, a name not taken yet."""
    from mergechat.core.store.export import default_export_dir, default_filename
    from mergechat.core.store.export_paths import free_path

    folder = default_export_dir() if output is None else Path(output).expanduser()
    if not folder.is_dir():
        return folder
    return free_path(folder / default_filename(conversation, fmt))


def _delete(store: HistoryStore, conv_id: int, yes: bool, stream: TextIO) -> None:
    conversation = store.get_conversation(conv_id)
    # repr() escapes control characters: the title is shown, never interpreted.
    label = (
        f"conversation {conv_id} ({conversation.title!r}, {len(conversation.messages)} messages)"
    )
    if not yes:
        if not _interactive():
            raise BadInputError(f"not deleting {label} without confirmation; add --yes")
        try:
            answer = input(f"Delete {label}? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            stream.write("nothing deleted\n")
            return
    store.delete(conv_id)
    stream.write(f"deleted {label}\n")


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()
