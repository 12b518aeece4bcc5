"""The model PATH of a command: checked and made absolute, or the demo model's folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mergechat.core.errors import ModelFolderError
from mergechat.core.visible import shown_path


def _demo_progress(line: str) -> None:
    sys.stderr.write(f"mergechat: demo: {line}\n")
    sys.stderr.flush()


def use_demo(args: argparse.Namespace) -> None:
    """With --demo, set ``args.path`` to the demo model folder (fetched and converted once)."""
    if args.demo:
        from mergechat.cli.demo import ensure_demo_model

        args.path = ensure_demo_model(_demo_progress)


def check_path(path: Path | None, *, must_exist: bool) -> Path | None:
    """``path`` expanded and absolute; unusable or (when ``must_exist``) missing is bad input."""
    if path is None:
        return None
    try:
        path = path.expanduser()
    except RuntimeError:  # ~name of a user that does not exist
        raise ModelFolderError(
            f"cannot expand ~ in the model path: {shown_path(path)}",
            "give the path without ~ or fix it",
        ) from None
    try:
        found = path.exists()
    except OSError as exc:  # a name too long, a loop of links...
        raise ModelFolderError(f"unusable model path {shown_path(path)}: {exc.strerror}") from None
    if found:
        return path.resolve()
    if must_exist:
        from mergechat.core.model.inspection import missing_path_error

        raise missing_path_error(path)
    return path.absolute()  # the app opens anyway: it says so and settings picks another
