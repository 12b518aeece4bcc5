"""The command line for a served model: ``mergechat URL [--model NAME] [--prompt TEXT]``.

Checks what only a local model can take (device, dtype, remote code) and turns the URL into the
model "path" the app and one-shot mode carry (`RemotePath`, the model id as its fragment).
"""

from __future__ import annotations

import argparse

from mergechat.core.api import LoadRequest
from mergechat.core.errors import BadInputError
from mergechat.core.model.target import looks_remote, parse_target, url_text
from mergechat.core.settings.generation import GenerationSettings

#: Flags that choose how a local model is loaded: a server decides these itself.
_LOCAL_ONLY = {
    "device": "--device",
    "dtype": "--dtype",
    "trust_remote_code": "--trust-remote-code",
}


def model_name(text: str) -> str:
    """``--model``: a non-empty model id (argparse ``type=``)."""
    value = text.strip()
    if not value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise argparse.ArgumentTypeError(
            f"expected a model id as the server lists it, got {text!r}"
        )
    return value


def use_remote_target(args: argparse.Namespace) -> None:
    """Check a URL given as PATH (with ``--model``) and set ``args.path`` to its `RemotePath`.

    Raises `BadInputError` (exit 2) for a malformed URL, ``--model`` without a URL, or a flag
    that only a local model takes.
    """
    if args.path is None or not looks_remote(args.path):
        raise BadInputError(
            "--model needs a server URL", "mergechat http://HOST:PORT/v1 --model NAME"
        )
    for dest, flag in _LOCAL_ONLY.items():
        if getattr(args, dest, None):
            raise BadInputError(
                f"{flag} does not apply to a server URL: the server chose how it runs the model",
                "restart the server with the setting you want (mergechat serve PATH --dtype T)",
            )
    target = parse_target(url_text(args.path), args.model)
    args.path = target.path()


def run_remote_oneshot(
    args: argparse.Namespace, settings: GenerationSettings, record_history: bool
) -> int:
    """Answer ``args.prompt`` with the served model: the same output and JSON keys as locally."""
    from mergechat.cli.oneshot import OneShotRequest, run_oneshot
    from mergechat.core.remote.client import RemoteClient

    request = OneShotRequest(
        load=LoadRequest(path=args.path),
        prompt=args.prompt,
        settings=settings,
        json_output=args.json,
        record_history=record_history,
        raw=args.raw,
    )
    return run_oneshot(request, engine_factory=RemoteClient)
