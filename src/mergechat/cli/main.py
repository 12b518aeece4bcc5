"""Command line entry: parse, dispatch to the app, one-shot or a subcommand, map exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from mergechat.cli.app_launch import run_app
from mergechat.cli.args import build_doctor_parser, build_parser, generation_settings
from mergechat.cli.checks import closed_stdout_error
from mergechat.cli.history import build_history_parser, run_history
from mergechat.cli.model_path import check_path, use_demo
from mergechat.cli.output import print_error
from mergechat.cli.remote import use_remote_target
from mergechat.core.api import LoadRequest
from mergechat.core.errors import BadInputError, MergechatError
from mergechat.core.model.target import looks_remote

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


def load_request(args: argparse.Namespace) -> LoadRequest:
    """The `LoadRequest` for one-shot mode (a PATH is required)."""
    assert args.path is not None
    return LoadRequest(
        path=args.path,
        device=args.device or "auto",
        dtype=args.dtype or "auto",
        trust_remote_code=args.trust_remote_code,
    )


# -- running --------------------------------------------------------------------------------------
def _run_main(args: argparse.Namespace) -> int:
    for flag in ("json", "raw"):
        if getattr(args, flag) and args.prompt is None:
            raise BadInputError(f"--{flag} needs --prompt")
    if args.prompt is None:
        return run_app(args)
    if args.path is None and not args.demo:
        raise BadInputError(
            "--prompt needs a model PATH (or --demo)", "mergechat PATH --prompt TEXT"
        )
    _debug_logging(args)
    if looks_remote(args.path):
        from mergechat.cli.remote import run_remote_oneshot

        record = not args.no_history and _history_enabled()
        return run_remote_oneshot(args, generation_settings(args), record)
    from mergechat.cli.oneshot import OneShotRequest, run_oneshot
    from mergechat.core.detect.devices import require_device
    from mergechat.core.model.inspection import inspect_model
    from mergechat.core.termination import end_process, signal_exit_code

    # Cheap checks first (no weights read), so a bad device or folder is exit 2, not a failed load.
    require_device(args.device or "auto")
    use_demo(args)
    # Files that are not a model fail here; problems that stop it from chatting (no tokenizer,
    # unknown architecture...) fail the load's strict inspection, also before any weight is read.
    inspect_model(args.path)
    code = run_oneshot(
        OneShotRequest(
            load=load_request(args),
            prompt=args.prompt,
            settings=generation_settings(args),
            json_output=args.json,
            record_history=not args.no_history and _history_enabled(),
            raw=args.raw,
        )
    )
    if signal_exit_code(code):
        # The reply is saved and the engine told to stop, but its thread may still be in a
        # torch op: leave without interpreter shutdown, which would abort ("terminate called").
        end_process(code)
    return code


def _history_enabled() -> bool:
    """The config file's ``[history] enabled`` (its other problems are the app's to report)."""
    from mergechat.core.settings.config import load_config

    return load_config()[0].history.enabled


def _run_doctor(args: argparse.Namespace) -> int:
    from mergechat.cli.doctor import DoctorRequest, run_doctor

    _debug_logging(args)
    use_demo(args)
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


def _compare_parser() -> argparse.ArgumentParser:
    from mergechat.cli.compare import build_compare_parser

    return build_compare_parser()


def _run_compare(args: argparse.Namespace) -> int:
    from mergechat.cli.compare import run_compare

    _debug_logging(args)
    return run_compare(args)


Runner = Callable[[argparse.Namespace], int]

#: Subcommands by name: a parser builder and a runner.
SUBCOMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Runner]] = {
    "doctor": (build_doctor_parser, _run_doctor),
    "history": (build_history_parser, run_history),
    "serve": (_serve_parser, _run_serve),
    "compare": (_compare_parser, _run_compare),
}


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
        args.path = check_path(args.path, must_exist=not app_mode)
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
