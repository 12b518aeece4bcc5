"""What `mergechat serve` will run: the engine, the precision by that engine's rules, the argv.

Pure: the caller measures (inspect, detector, fidelity cache) and runs the command; everything
here is a decision that tests can check on fake machines.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from mergechat.core.detect.capabilities import Capabilities, DeviceInfo
from mergechat.core.detect.fidelity_cache import Float16Safety
from mergechat.core.detect.policy import assess
from mergechat.core.dtypes import DType, has_range_of
from mergechat.core.errors import BadInputError
from mergechat.core.model.info import ModelInfo

Engine = Literal["vllm", "transformers"]

#: vLLM runs bfloat16 only on CUDA GPUs of at least this compute capability.
VLLM_BF16_MIN_CC: Final[tuple[int, int]] = (8, 0)
#: The environment variable whose key `mergechat serve` hands to vLLM (as ``VLLM_API_KEY``).
ENV_API_KEY: Final[str] = "MERGECHAT_API_KEY"
#: vLLM reads its key from ``--api-key`` or this variable; the variable keeps it out of ``ps``.
VLLM_ENV_API_KEY: Final[str] = "VLLM_API_KEY"
VLLM_INSTALL: Final[str] = (
    "--engine vllm: vLLM is not installed here; install it with `pip install vllm` "
    "(Linux with a CUDA GPU), or use --engine transformers"
)


@dataclass(frozen=True)
class ServeRequest:
    """What ``mergechat serve`` was asked."""

    path: Path
    #: None: vLLM when it is installed (and a CUDA GPU is here), else ``transformers serve``.
    engine: Engine | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    dtype: DType | Literal["auto"] = "auto"
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None


@dataclass(frozen=True)
class ServePlan:
    """The engine and precision chosen, why, and the command that runs the server."""

    engine: Engine
    dtype: DType
    #: Where the weights go: ``cuda`` (vLLM), or ``transformers serve``'s ``--device``.
    device: str
    reason: str
    argv: tuple[str, ...]
    #: Extra environment for the server (vLLM's key); never printed.
    env: dict[str, str] = field(default_factory=dict, repr=False)
    warnings: tuple[str, ...] = ()
    #: The model id clients ask for.
    model_name: str = ""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1): no one else can connect."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def client_url(host: str, port: int, hostname: str) -> str:
    """The URL a client gives mergechat; a wildcard address becomes this machine's name."""
    shown = host.strip("[]")
    if shown in ("0.0.0.0", "::", ""):
        shown = hostname
    elif ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/v1"


def check_request(request: ServeRequest, vllm_installed: bool) -> None:
    """The mistakes found without looking at the machine (before the detector runs)."""
    if request.engine == "vllm" and not vllm_installed:
        raise BadInputError(VLLM_INSTALL)
    parallel = request.tensor_parallel_size or request.pipeline_parallel_size
    if parallel and request.engine == "transformers":
        raise BadInputError(
            "--tensor-parallel-size and --pipeline-parallel-size need --engine vllm"
        )


def choose_engine(request: ServeRequest, caps: Capabilities, vllm_installed: bool) -> Engine:
    """The engine to run: the user's, else vLLM when it can run here, else transformers."""
    check_request(request, vllm_installed)
    gpus = _cuda(caps)
    if request.engine == "vllm":
        if not gpus:
            raise BadInputError(
                "--engine vllm: vLLM needs a CUDA GPU and this machine has none; "
                "use --engine transformers"
            )
        return "vllm"
    if request.engine == "transformers":
        return "transformers"
    if vllm_installed and gpus:
        return "vllm"
    if request.tensor_parallel_size or request.pipeline_parallel_size:
        raise BadInputError(
            "--tensor-parallel-size and --pipeline-parallel-size need vLLM"
            + ("" if vllm_installed else " (pip install vllm)")
            + " and a CUDA GPU"
        )
    return "transformers"


def _cuda(caps: Capabilities) -> list[DeviceInfo]:
    return [d for d in caps.devices if d.kind == "cuda"]


def _cc_text(cc: tuple[int, int] | None) -> str:
    return "an unknown compute capability" if cc is None else "compute capability {}.{}".format(*cc)


def vllm_dtype(
    info: ModelInfo,
    caps: Capabilities,
    dtype: DType | Literal["auto"],
    safety: Float16Safety | None,
) -> tuple[DType, str, tuple[str, ...]]:
    """vLLM's precision, its reason and warnings: the detector's pick on the first GPU, moved off
    bfloat16 on a GPU below compute capability 8.0 (to float16 only when measured safe)."""
    gpus = _cuda(caps)
    oldest = min(gpus, key=lambda d: d.compute_capability or (0, 0))
    cc = oldest.compute_capability
    bf16_ok = cc is not None and cc >= VLLM_BF16_MIN_CC
    gpu = f"{oldest.id} ({oldest.name}) has {_cc_text(cc)}"
    if dtype != "auto":
        if dtype == "bfloat16" and not bf16_ok:
            raise BadInputError(
                f"--dtype bfloat16: vLLM runs bfloat16 only on compute capability 8.0 or newer "
                f"and {gpu}; use --dtype float16 or --dtype float32"
            )
        unsafe = _float16_unsafe(info, dtype, safety)
        return dtype, f"{dtype}: chosen by the user", (unsafe,) if unsafe else ()
    float16_safe = safety.safe if safety is not None else None
    rec = assess(info, caps, device=gpus[0].id, float16_safe=float16_safe).recommendation
    if rec.dtype != "bfloat16" or bf16_ok:
        return rec.dtype, rec.reason, rec.warnings
    native = info.native_dtype
    kind = "merge" if info.merge is not None else "model"
    head = f"vLLM runs bfloat16 only on compute capability 8.0 or newer and {gpu}"
    if has_range_of("float16", native):
        return "float16", f"float16: {head}; float16 holds this {native} {kind}", ()
    if safety is not None and safety.safe:
        why = f"float16: {head}; doctor --fidelity measured float16 safe: {safety.reason}"
        return "float16", why, (f"float16 rounds the {native} weights (fewer exponent bits)",)
    if safety is None:
        unsafe = (
            f"float16 was never measured on this {kind} (measure it: "
            f"mergechat doctor {info.path} --fidelity, then serve again)"
        )
    else:
        unsafe = f"float16 is not safe for this {kind}: {safety.reason}"
    why = f"float32: {head}; {unsafe}"
    return "float32", why, ("float32 takes twice the GPU memory of bfloat16",)


def _float16_unsafe(info: ModelInfo, dtype: DType, safety: Float16Safety | None) -> str | None:
    """The warning for a user's float16 on a model whose values float16 may not hold."""
    native = info.native_dtype
    if dtype != "float16" or has_range_of("float16", native) or (safety and safety.safe):
        return None
    return (
        f"float16 cannot hold the largest {native} values unless measured "
        f"(mergechat doctor {info.path} --fidelity): replies may turn to NaN or nonsense"
    )


def transformers_choice(
    info: ModelInfo,
    caps: Capabilities,
    dtype: DType | Literal["auto"],
    safety: Float16Safety | None,
) -> tuple[DType, str, str, tuple[str, ...]]:
    """``transformers serve``'s dtype, device, reason and warnings: the detector's choice."""
    float16_safe = safety.safe if safety is not None else None
    rec = assess(info, caps, dtype=dtype, float16_safe=float16_safe).recommendation
    device = "auto" if rec.device_map == "auto" else rec.device
    return rec.dtype, device, rec.reason, rec.warnings


def auth_warning(engine: Engine, host: str, port: int, key_set: bool) -> str | None:
    """The warning for a server reachable from other machines without a key, if any."""
    if is_loopback(host) or (engine == "vllm" and key_set):
        return None
    tunnel = f"ssh -L {port}:127.0.0.1:{port} THIS-MACHINE"
    if engine == "vllm":
        how = (
            f"set {ENV_API_KEY} to require a key (mergechat hands it to vLLM's --api-key as "
            f"{VLLM_ENV_API_KEY}), or serve on 127.0.0.1 and connect through `{tunnel}`"
        )
    else:
        how = f"transformers serve has no key option: serve on 127.0.0.1 and use `{tunnel}`"
    return (
        f"the server on {host}:{port} has no authentication: anyone who can reach it can use "
        f"the model; {how}"
    )


def build_plan(
    request: ServeRequest,
    info: ModelInfo,
    caps: Capabilities,
    *,
    safety: Float16Safety | None,
    vllm_installed: bool,
    program: tuple[str, ...],
    environ: dict[str, str],
) -> ServePlan:
    """The whole decision; ``program`` starts the engine (``vllm`` or ``transformers``)."""
    engine = choose_engine(request, caps, vllm_installed)
    name = info.path.name or str(info.path)
    key = environ.get(ENV_API_KEY) or ""
    warnings: list[str] = []
    env: dict[str, str] = {}
    if engine == "vllm":
        dtype, reason, notes = vllm_dtype(info, caps, request.dtype, safety)
        device = "cuda"
        argv = [*program, "serve", str(info.path), "--dtype", dtype]
        argv += ["--host", request.host, "--port", str(request.port)]
        argv += ["--served-model-name", name]
        if request.tensor_parallel_size:
            argv += ["--tensor-parallel-size", str(request.tensor_parallel_size)]
        if request.pipeline_parallel_size:
            argv += ["--pipeline-parallel-size", str(request.pipeline_parallel_size)]
        gpus = (request.tensor_parallel_size or 1) * (request.pipeline_parallel_size or 1)
        if gpus > 1:
            warnings.append(f"memory fit was checked for one GPU; vLLM splits it over {gpus}")
        if key:
            env[VLLM_ENV_API_KEY] = key
        key_set = bool(key or environ.get(VLLM_ENV_API_KEY))
    else:
        dtype, device, reason, notes = transformers_choice(info, caps, request.dtype, safety)
        argv = [*program, "serve", "--host", request.host, "--port", str(request.port)]
        argv += ["--dtype", dtype, "--device", device, str(info.path)]
        if key:
            warnings.append(f"{ENV_API_KEY} is set but transformers serve cannot check keys")
        key_set = False
        name = str(info.path)  # transformers serve names the model by what it was given
    warnings += notes
    auth = auth_warning(engine, request.host, request.port, key_set)
    if auth:
        warnings.append(auth)
    return ServePlan(engine, dtype, device, reason, tuple(argv), env, tuple(warnings), name)
