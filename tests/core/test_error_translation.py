"""translate(): raw torch / transformers failures become one clear message with a hint."""

from __future__ import annotations

import pytest
import torch

from mergechat.core.engine.error_translation import translate
from mergechat.core.errors import BadInputError, MergechatError, ModelFolderError

HALF = "\"addmm_impl_cpu_\" not implemented for 'Half'"


def test_half_matmul_error_says_what_to_choose() -> None:
    error = translate(RuntimeError(HALF), dtype="float16", device="cpu")
    assert type(error) is MergechatError
    assert error.message.startswith("float16 matmul is not supported on this CPU with this torch")
    assert error.hint is not None
    assert "float32" in error.hint and "bfloat16" in error.hint and "--dtype auto" in error.hint


def test_bfloat16_kernel_missing_names_bfloat16() -> None:
    error = translate(RuntimeError("\"baddbmm_cpu\" not implemented for 'BFloat16'"))
    assert error.message.startswith("bfloat16 matmul is not supported on this CPU")
    assert error.hint is not None and "float32" in error.hint and "bfloat16" not in error.hint


def test_real_half_error_text_from_torch_if_this_torch_raises_it() -> None:
    # On torch >= 2.2 fp16 matmul works on CPU; then the simulated text above is the check.
    try:
        torch.ones(2, 2, dtype=torch.float16) @ torch.ones(2, 2, dtype=torch.float16)
    except RuntimeError as exc:
        assert "not supported" in translate(exc).message


def test_cuda_out_of_memory_by_type_and_by_text() -> None:
    by_type = translate(torch.cuda.OutOfMemoryError("CUDA error"), dtype="float32", device="cuda:0")
    by_text = translate(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    for error in (by_type, by_text):
        assert "out of memory" in error.message
        assert error.hint is not None and "device_map" in error.hint
    assert "cuda:0" in by_type.message and "float32" in by_type.message


def test_cpu_allocation_failure() -> None:
    text = "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
    error = translate(RuntimeError(text), dtype="float32")
    assert "RAM" in error.message and "float32" in error.message
    assert error.hint is not None and "bfloat16" in error.hint
    assert "RAM" in translate(MemoryError()).message


def test_missing_tokenizer_is_a_model_folder_error() -> None:
    error = translate(OSError("Can't load tokenizer for '/models/x'. If you were trying..."))
    assert isinstance(error, ModelFolderError)
    assert error.exit_code == 2
    assert "tokenizer" in error.message


@pytest.mark.parametrize(
    "exc",
    [
        ValueError(
            "The checkpoint you are trying to load has model type `fancy` but Transformers "
            "does not recognize this architecture. This could be ..."
        ),
        KeyError("model_type"),
    ],
)
def test_unknown_architecture(exc: BaseException) -> None:
    error = translate(exc)
    assert isinstance(error, ModelFolderError)
    assert "architecture" in error.message
    if isinstance(exc, ValueError):
        assert "(fancy)" in error.message


def test_trust_remote_code_required() -> None:
    exc = ValueError(
        "The repository /m contains custom code which must be executed to correctly load the "
        "model. Please pass the argument `trust_remote_code=True` to allow custom code to be run."
    )
    error = translate(exc)
    assert isinstance(error, BadInputError)
    assert "ships its own Python code" in error.message
    assert error.hint is not None and "--trust-remote-code" in error.hint


def test_mergechat_errors_pass_through_and_unknown_keep_first_line() -> None:
    own = ModelFolderError("not a model folder", hint="x")
    assert translate(own) is own
    error = translate(RuntimeError("something odd\nwith a long second line"))
    assert type(error) is MergechatError
    assert error.message == "RuntimeError: something odd"
    assert translate(RuntimeError()).message == "RuntimeError"
