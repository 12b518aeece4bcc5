"""`mergechat serve`'s decision on fake machines: the engine, vLLM's precision rules, the argv
against vLLM's documented `vllm serve` flags, the key and the warning for other machines."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.test_policy import EPYC, caps, cpu, gpu, model, probes
from mergechat.cli.main import main
from mergechat.core.detect.capabilities import Capabilities
from mergechat.core.detect.fidelity_cache import Float16Safety
from mergechat.core.errors import BadInputError
from mergechat.core.remote.serve_plan import (
    ServePlan,
    ServeRequest,
    build_plan,
    client_url,
    is_loopback,
)

PATH = Path("/models/m")
VLLM = ("/venv/bin/vllm",)
TRANSFORMERS = (sys.executable, "-m", "transformers.cli.transformers")
# vLLM's flags as `vllm serve --help` documents them (docs.vllm.ai, "vllm serve" usage).
VLLM_FLAGS = {
    "--dtype": {"auto", "bfloat16", "float", "float16", "float32", "half"},
    "--host": None,
    "--port": None,
    "--served-model-name": None,
    "--tensor-parallel-size": None,
    "--pipeline-parallel-size": None,
}
A100 = gpu(0, "NVIDIA A100-SXM4-80GB", (8, 0), 70)
V100 = gpu(0, "Tesla V100-SXM2-32GB", (7, 0), 30)
# Torch runs bfloat16 on a V100 without complaint; vLLM refuses it there.
GPU_OK = probes("cuda:0", float32=0.0002, bfloat16=0.0001, float16=0.0001)
SAFE = Float16Safety(True, "float16 holds this bfloat16 model comfortably", "lm_head", 812.0)
UNSAFE = Float16Safety(False, "float16 overflows at model.layers.3.mlp", "layers.3", 91000.0)


def machine(*gpus: object) -> Capabilities:
    if not gpus:
        return caps((cpu(),), EPYC)
    return caps((cpu(), *gpus), EPYC, GPU_OK)  # type: ignore[arg-type]


def plan(
    on: Capabilities,
    *,
    safety: Float16Safety | None = None,
    vllm: bool = True,
    env: dict[str, str] | None = None,
    dtype: str = "bfloat16",
    **request: object,
) -> ServePlan:
    return build_plan(
        ServeRequest(PATH, **request),  # type: ignore[arg-type]
        model(7_000_000_000, dtype),  # type: ignore[arg-type]
        on,
        safety=safety,
        vllm_installed=vllm,
        program=VLLM if vllm else TRANSFORMERS,
        environ=env or {},
    )


def vllm_options(argv: tuple[str, ...]) -> dict[str, str]:
    """``vllm serve MODEL --flag value ...`` as a dict, checking every flag is vLLM's own."""
    assert argv[: len(VLLM) + 2] == (*VLLM, "serve", str(PATH))
    rest = argv[len(VLLM) + 2 :]
    options = dict(zip(rest[::2], rest[1::2], strict=True))
    for flag, value in options.items():
        assert flag in VLLM_FLAGS, flag
        allowed = VLLM_FLAGS[flag]
        assert allowed is None or value in allowed, (flag, value)
    return options


def test_a_bf16_merge_on_compute_capability_8_is_served_in_bfloat16() -> None:
    served = plan(machine(A100))
    assert (served.engine, served.dtype, served.device) == ("vllm", "bfloat16", "cuda")
    assert vllm_options(served.argv) == {
        "--dtype": "bfloat16",
        "--host": "127.0.0.1",
        "--port": "8000",
        "--served-model-name": "m",
    }
    assert served.reason.startswith("bfloat16: the merge's dtype")
    assert served.warnings == () and served.env == {}


def test_parallel_sizes_reach_vllm() -> None:
    served = plan(machine(A100), tensor_parallel_size=8, pipeline_parallel_size=2, port=9000)
    options = vllm_options(served.argv)
    assert options["--tensor-parallel-size"] == "8"
    assert options["--pipeline-parallel-size"] == "2"
    assert options["--port"] == "9000"
    assert "memory fit was checked for one GPU; vLLM splits it over 16" in served.warnings


def test_a_bf16_merge_on_compute_capability_7_without_a_measurement_goes_float32() -> None:
    served = plan(machine(V100))
    assert vllm_options(served.argv)["--dtype"] == "float32"
    assert "vLLM runs bfloat16 only on compute capability 8.0 or newer" in served.reason
    assert "cuda:0 (Tesla V100-SXM2-32GB) has compute capability 7.0" in served.reason
    assert "mergechat doctor /models/m --fidelity" in served.reason
    assert "float32 takes twice the GPU memory of bfloat16" in served.warnings


def test_a_bf16_merge_on_compute_capability_7_measured_safe_goes_float16() -> None:
    served = plan(machine(V100), safety=SAFE)
    assert vllm_options(served.argv)["--dtype"] == "float16"
    assert served.reason.startswith("float16: vLLM runs bfloat16 only on compute capability 8.0")
    assert SAFE.reason in served.reason


def test_a_bf16_merge_measured_unsafe_in_float16_goes_float32_with_the_reason() -> None:
    served = plan(machine(V100), safety=UNSAFE)
    assert served.dtype == "float32"
    assert f"float16 is not safe for this merge: {UNSAFE.reason}" in served.reason


def test_a_float16_model_on_compute_capability_7_stays_float16() -> None:
    assert plan(machine(V100), dtype="float16").dtype == "float16"


def test_the_oldest_gpu_decides() -> None:
    second = gpu(1, "Tesla V100-SXM2-32GB", (7, 0), 30)
    assert plan(machine(A100, second)).dtype == "float32"


def test_bfloat16_asked_on_compute_capability_7_is_refused() -> None:
    with pytest.raises(BadInputError, match=r"vLLM runs bfloat16 only on compute capability 8\.0"):
        build_plan(
            ServeRequest(PATH, dtype="bfloat16"),
            model(1_000_000),
            machine(V100),
            safety=None,
            vllm_installed=True,
            program=VLLM,
            environ={},
        )


def test_a_cpu_only_machine_runs_transformers_with_the_detectors_choice() -> None:
    served = plan(machine(), vllm=False)
    assert served.engine == "transformers" and served.device == "cpu"
    assert served.argv == (
        *TRANSFORMERS,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--dtype",
        served.dtype,
        "--device",
        "cpu",
        str(PATH),
    )
    # The EPYC's probes keep a bf16 merge in bfloat16 (the detector's own pick).
    assert served.dtype == "bfloat16" and served.reason.startswith("bfloat16: the merge's dtype")
    # Even with vLLM installed, a machine without a CUDA GPU gets transformers.
    assert plan(machine()).engine == "transformers"


def test_vllm_without_a_gpu_or_not_installed_is_bad_input() -> None:
    with pytest.raises(BadInputError, match="vLLM needs a CUDA GPU"):
        plan(machine(), engine="vllm")
    with pytest.raises(BadInputError, match=r"pip install vllm"):
        plan(machine(A100), engine="vllm", vllm=False)
    with pytest.raises(BadInputError, match="need --engine vllm"):
        plan(machine(A100), engine="transformers", tensor_parallel_size=2)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.12", "::", "box.example.org"])
def test_another_address_warns_about_authentication(host: str) -> None:
    served = plan(machine(A100), host=host)
    [warning] = [w for w in served.warnings if "no authentication" in w]
    assert "set MERGECHAT_API_KEY" in warning and "ssh -L 8000:127.0.0.1:8000" in warning
    assert vllm_options(served.argv)["--host"] == host
    local = plan(machine(), vllm=False, host=host)
    assert any("transformers serve has no key option" in w for w in local.warnings)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_does_not_warn(host: str) -> None:
    assert is_loopback(host)
    assert not any("authentication" in w for w in plan(machine(A100), host=host).warnings)


def test_the_key_goes_to_vllm_in_its_environment_never_on_the_command_line() -> None:
    served = plan(machine(A100), host="0.0.0.0", env={"MERGECHAT_API_KEY": "s3cret"})
    assert served.env == {"VLLM_API_KEY": "s3cret"}
    assert not any("s3cret" in part for part in served.argv)
    assert "s3cret" not in repr(served)
    assert not any("authentication" in w for w in served.warnings)
    local = plan(machine(), vllm=False, host="0.0.0.0", env={"MERGECHAT_API_KEY": "s3cret"})
    assert local.env == {} and not any("s3cret" in part for part in local.argv)
    assert any("cannot check keys" in w for w in local.warnings)


def test_client_urls() -> None:
    assert client_url("127.0.0.1", 8000, "box") == "http://127.0.0.1:8000/v1"
    assert client_url("0.0.0.0", 8001, "box") == "http://box:8001/v1"
    assert client_url("::1", 8000, "box") == "http://[::1]:8000/v1"


# -- the command line ------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_engine_vllm_when_not_installed_is_one_error_line(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", str(tiny_model_dir), "--engine", "vllm"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("mergechat: error: --engine vllm:"), err
    assert "pip install vllm" in err


def test_a_gguf_or_a_missing_path_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fixtures.broken_models import tiny_gguf_file

    assert main(["serve", str(tiny_gguf_file())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mergechat: error: mergechat serve takes a model folder"), err
    assert "llama-server" in err
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith("mergechat: error:")


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "0"],
        ["--port", "x"],
        ["--engine", "tgi"],
        ["--dtype", "int8"],
        ["--engine", "transformers", "--tensor-parallel-size", "2"],
        ["--pipeline-parallel-size", "0"],
    ],
)
def test_bad_serve_flags_are_exit_2(
    argv: list[str], tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", str(tiny_model_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mergechat: error:") and "Traceback" not in err


# -- signals ---------------------------------------------------------------------------------------

_CHILD = """
import signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, lambda n, f: sys.exit(10 + n))
print("ready", flush=True)
signal.pause()
"""
_PARENT = """
import sys
from mergechat.cli.serve import run_child
sys.exit(run_child((sys.executable, "-c", sys.argv[1]), {}))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_are_passed_to_the_server_and_its_code_comes_back(signum: int) -> None:
    """The server runs in its own process group: only mergechat's forwarding can reach it."""
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_PARENT), textwrap.dedent(_CHILD)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
    )
    assert parent.stdout is not None
    assert parent.stdout.readline().strip() == "ready"
    parent.send_signal(signum)
    assert parent.wait(timeout=60) == 10 + signum
