"""`mergechat serve PATH`: pick the precision for this machine, then run vLLM's or transformers'
own OpenAI-compatible server in the foreground, so a client elsewhere can chat with the merge.

The decision lives in `core.serve_plan`; this module measures, prints and runs the child, and
forwards SIGINT, SIGTERM and SIGHUP to it (the child has its own process group, so a Ctrl+C
reaches it once, through mergechat).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import NoReturn, TextIO

from mergechat.core.dtypes import parse_dtype_choice
from mergechat.core.errors import BadInputError, MergechatError
from mergechat.core.remote.serve_plan import (
    Engine,
    ServePlan,
    ServeRequest,
    build_plan,
    check_request,
    client_url,
)
from mergechat.core.visible import escape_control

#: The signals a foreground server must pass on: Ctrl+C, ``kill``, a dropped SSH session.
FORWARDED = tuple(
    int(getattr(signal, name)) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class _Parser(argparse.ArgumentParser):
    """Errors become one `mergechat: error:` line and exit code 2 (as the main parser's)."""

    def error(self, message: str) -> NoReturn:
        raise BadInputError(message)


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low} to {high}, got {text!r}")
        return value

    return convert


def _host(text: str) -> str:
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        raise argparse.ArgumentTypeError(f"not a host name or address: {text!r}")
    return text


def _dtype(text: str) -> str:
    try:
        return parse_dtype_choice(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_serve_parser() -> argparse.ArgumentParser:
    """The parser of ``mergechat serve PATH [options]``."""
    parser = _Parser(
        prog="mergechat serve",
        description="Serve a model folder over an OpenAI-compatible HTTP API with vLLM (when "
        "installed) or `transformers serve`, in the precision the detector picks for this "
        "machine. Then chat from anywhere: mergechat http://HOST:PORT/v1",
        epilog="An API key for vLLM comes from the MERGECHAT_API_KEY environment variable "
        "(never a flag). Stop the server with Ctrl+C.",
    )
    parser.add_argument("path", type=Path, metavar="PATH", help="model folder")
    parser.add_argument(
        "--engine",
        choices=("vllm", "transformers"),
        default=None,
        help="default: vllm when installed and a CUDA GPU is here, else transformers",
    )
    parser.add_argument(
        "--host", type=_host, default="127.0.0.1", help="address to listen on (127.0.0.1)"
    )
    parser.add_argument("--port", type=_int_in(1, 65535), default=8000, help="default 8000")
    parser.add_argument(
        "--dtype",
        type=_dtype,
        default="auto",
        help="auto (the detector's choice), float32, bfloat16 or float16",
    )
    for flag in ("--tensor-parallel-size", "--pipeline-parallel-size"):
        parser.add_argument(flag, type=_int_in(1, 4096), metavar="N", help="vLLM only")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _programs() -> dict[Engine, tuple[str, ...]]:
    """How to start each engine with this Python (its scripts may not be on PATH)."""
    beside = Path(sys.executable).parent / "vllm"
    vllm = str(beside) if beside.exists() else shutil.which("vllm")
    return {
        "vllm": (vllm,) if vllm else (sys.executable, "-m", "vllm.entrypoints.cli.main"),
        "transformers": (sys.executable, "-m", "transformers.cli.transformers"),
    }


def _require_serving_extras() -> None:
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise BadInputError(
            f"transformers serve needs {' and '.join(missing)}, not installed here; install "
            "them with `pip install 'transformers[serving]'`"
        )


def plan_for(request: ServeRequest, environ: dict[str, str]) -> ServePlan:
    """Inspect the model and run the detector here, then decide (no server started)."""
    from mergechat.core.detect.fidelity_cache import float16_safety
    from mergechat.core.detect.model_support import inspect_model
    from mergechat.core.detect.probe import detect
    from mergechat.core.detect.probe_shape import shape_for

    vllm_installed = importlib.util.find_spec("vllm") is not None
    info = inspect_model(request.path, strict=True)
    if info.weights_format == "gguf":
        raise BadInputError(
            "mergechat serve takes a model folder (safetensors), not a GGUF file",
            "serve a .gguf with llama.cpp's llama-server, then: mergechat http://HOST:PORT/v1",
        )
    check_request(request, vllm_installed)  # before the probes: a mistake is said at once
    if request.engine == "transformers":
        _require_serving_extras()
    caps = detect(shape=shape_for(info))
    plan = build_plan(
        request,
        info,
        caps,
        safety=float16_safety(info),
        vllm_installed=vllm_installed,
        program=("ENGINE",),
        environ=environ,
    )
    program = _programs()[plan.engine]
    return dataclasses.replace(plan, argv=(*program, *plan.argv[1:]))


def describe(plan: ServePlan, request: ServeRequest, url: str) -> str:
    """The block printed before the server starts: what, why, warnings, how to connect."""
    lines = [f"mergechat serve: {escape_control(str(request.path))}"]
    lines.append(f"  engine     {plan.engine} serve")
    lines.append(f"  precision  {plan.dtype} on {plan.device}")
    lines.append(f"  reason     {escape_control(plan.reason)}")
    lines += [f"  warning    {escape_control(w)}" for w in plan.warnings]
    lines.append(f"  command    {escape_control(shlex.join(plan.argv))}")
    lines.append(f"  connect    mergechat {url}")
    return "\n".join(lines) + "\n"


def run_child(argv: tuple[str, ...], env: dict[str, str]) -> int:
    """Run ``argv`` in its own process group, passing on SIGINT/SIGTERM/SIGHUP; its exit code
    (128 + N when a signal N ended it)."""
    children: list[subprocess.Popen[bytes]] = []
    pending: list[int] = []  # a signal that came before the child existed

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)
        if not children:
            pending.append(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        try:
            children.append(
                subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,  # its own process group may not read the terminal
                    env={**os.environ, **env},
                    process_group=0,
                )
            )
        except OSError as exc:
            raise MergechatError(f"could not start {argv[0]}: {exc.strerror or exc}") from None
        for signum in pending:
            children[0].send_signal(signum)
        code = children[0].wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - code if code < 0 else code


def run_serve(args: argparse.Namespace, *, err: TextIO | None = None) -> int:
    """``mergechat serve``: decide, print the decision on stderr, run the server until it ends."""
    from mergechat.core.settings import served_record

    request = ServeRequest(
        path=args.path,
        engine=args.engine,
        host=args.host,
        port=args.port,
        dtype=args.dtype,
        tensor_parallel_size=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size,
    )
    plan = plan_for(request, dict(os.environ))
    if plan.engine == "transformers":
        _require_serving_extras()
    url = client_url(request.host, request.port, socket.gethostname())
    stream = err or sys.stderr
    stream.write(describe(plan, request, url))
    stream.flush()
    record = {
        "engine": plan.engine,
        "dtype": plan.dtype,
        "device": plan.device,
        "model": plan.model_name,
        "path": str(request.path),
        "host": request.host,
        "port": request.port,
        "pid": os.getpid(),
        "url": url,
    }
    served_record.remember(request.port, record)
    try:
        return run_child(plan.argv, plan.env)
    finally:
        served_record.forget(request.port, os.getpid())
