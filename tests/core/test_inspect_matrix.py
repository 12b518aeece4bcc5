"""Unit checks behind the bad-input matrix: pickle scan, architecture and tokenizer problems,
strict inspection, error translation of broken files and out of memory, the NaN/inf guard."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from fixtures.broken_models import CASES
from mergechat.core.detect.model_support import architecture_problem
from mergechat.core.engine import finite_check, loader
from mergechat.core.engine.error_translation import out_of_memory_error, translate
from mergechat.core.engine.pickle_check import torch_unsafe_globals
from mergechat.core.errors import MergechatError, ModelFolderError
from mergechat.core.model.inspection import inspect_model, require_usable
from mergechat.core.model.pickle_scan import unsafe_pickle_globals


class _Exec:
    """Unpickling runs ``exec`` (never executed here: the scan only parses opcodes)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w')",)


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_scan_finds_code_in_every_format(
    tmp_path: Path, protocol: int, zip_format: bool
) -> None:
    marker = tmp_path / "ran"
    unsafe, safe = tmp_path / "unsafe.bin", tmp_path / "safe.bin"
    kwargs: dict[str, Any] = {"pickle_protocol": protocol}
    if not zip_format:
        kwargs["_use_new_zipfile_serialization"] = False
    # Two payload objects: protocol 4+ fetches the repeated global names from the memo.
    payload = {"w": torch.ones(2), "a": _Exec(marker), "b": _Exec(marker)}
    torch.save(payload, unsafe, **kwargs)
    torch.save({"w": torch.ones(2, dtype=torch.bfloat16), "p": torch.nn.Parameter(torch.ones(1))},
               safe, **kwargs)  # fmt: skip
    # The torch-free scan (doctor, UI) and torch's own list (the engine) agree.
    for scan in (unsafe_pickle_globals, torch_unsafe_globals):
        assert scan(unsafe) == ("builtins.exec",)
        assert scan(safe) == ()
    assert not marker.exists()


def test_the_engine_uses_torchs_allow_list(tmp_path: Path) -> None:
    # torch's list is the one torch.load(weights_only=True) uses, user additions included.
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(2), "d": torch.device("cpu"), "f": torch.finfo}, path)
    with torch.serialization.safe_globals([torch.finfo]):
        assert torch_unsafe_globals(path) == ()
    assert torch_unsafe_globals(path) == ("torch.finfo",)


@pytest.mark.parametrize("scan", [unsafe_pickle_globals, torch_unsafe_globals])
def test_pickle_scan_rejects_a_file_that_is_no_checkpoint(tmp_path: Path, scan: Any) -> None:
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelFolderError, match="not a PyTorch checkpoint"):
        scan(path)


def test_architecture_problems() -> None:
    from transformers.models.auto.configuration_auto import (  # type: ignore[attr-defined]
        CONFIG_MAPPING_NAMES,
    )
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    assert architecture_problem("llama", ["LlamaForCausalLM"]) is None
    missing = architecture_problem(None, ["FooForCausalLM"])
    assert missing is not None and "no model_type" in missing.message
    assert "FooForCausalLM" in missing.message and missing.hint
    unknown = architecture_problem("frobnicator", [])
    assert unknown is not None and "unknown model_type 'frobnicator'" in unknown.message
    not_causal = next(t for t in CONFIG_MAPPING_NAMES if t not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    problem = architecture_problem(not_causal, [])
    assert problem is not None and "not a text-generation model" in problem.message


def test_strict_inspection_raises_what_lenient_lists(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = CASES["tokenizer_too_big"].builder(tmp_path, tiny_model_dir)
    info = inspect_model(path)  # lenient: doctor shows the rest of the report
    assert len(info.problems) == 1 and "390 tokens" in info.problems[0].message
    with pytest.raises(ModelFolderError, match="only 384 rows") as err:
        inspect_model(path, strict=True)
    assert err.value.exit_code == 2 and err.value.hint
    with pytest.raises(ModelFolderError):
        require_usable(info)
    require_usable(inspect_model(tiny_model_dir))  # a good model has no problem


def test_payload_pickle_is_a_problem_not_a_crash(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = CASES["pickle_bin_payload"].builder(tmp_path, tiny_model_dir)
    (problem,) = inspect_model(path).problems
    assert "builtins.exec" in problem.message and "weights_only=True" in problem.message
    assert not (tmp_path / "PAYLOAD_RAN").exists()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Weights only load failed. This file can still be loaded ...", "weights_only=True"),
        ("Error while deserializing header: HeaderTooLarge", "damaged or incomplete"),
        ("size mismatch for model.embed_tokens.weight: copying a param ...", "embed_tokens"),
        ("Unrecognized configuration class <class 'X'> for this kind of AutoModel", "not a text"),
    ],
)
def test_broken_file_errors_are_bad_input(text: str, fragment: str) -> None:
    error = translate(RuntimeError(text))
    assert isinstance(error, ModelFolderError) and error.exit_code == 2
    assert fragment in error.message and error.hint


def test_out_of_memory_messages_name_needed_and_free() -> None:
    cuda = translate(
        torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
            "15.77 GiB of which 1.05 GiB is free."
        ),
        dtype="bfloat16",
        device="cuda:0",
    )
    assert cuda.message == (
        "out of memory on cuda:0 in bfloat16: tried to allocate 2.00 GiB, 1.05 GiB free of "
        "15.77 GiB"
    )
    cpu = translate(
        RuntimeError(
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 2048 bytes"
        ),
        dtype="float32",
    )
    assert cpu.message.startswith("not enough RAM in float32: tried to allocate 2.0 KiB")
    assert "free" in cpu.message
    at_load = out_of_memory_error(
        MemoryError(), dtype="float32", needed_bytes=3 << 30, free_bytes=1 << 30, what="loading"
    )
    assert at_load.message == "not enough RAM loading in float32: 3.0 GiB needed, 1.0 GiB free"
    for error in (cuda, cpu, at_load):
        assert error.exit_code == 1
        assert error.hint and "smaller dtype" in error.hint and "offload" in error.hint


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_finite_guard_names_the_tensor_and_the_cause(tiny_model: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_model
    weight = model.model.norm.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight[0] = float("inf")
        # Loaded exactly: the files hold the inf (exit 2). After a lossy cast: an overflow (1).
        with pytest.raises(ModelFolderError, match=r"model\.norm\.weight holds inf"):
            loader.check_finite(model, tokenizer, "float32", exact=True)
        with pytest.raises(MergechatError) as overflow:
            loader.check_finite(model, tokenizer, "float16", exact=False)
        assert not isinstance(overflow.value, ModelFolderError)
        assert "weights produce NaN/inf in float16" in overflow.value.message
        with torch.no_grad():
            weight[1] = float("nan")
        with pytest.raises(ModelFolderError, match="holds NaN and inf"):
            loader.check_finite(model, tokenizer, "float32", exact=False)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert loader.check_finite(model, tokenizer, "float32").shape[-1] == 384


def test_finite_guard_with_finite_weights_blames_the_precision(
    tiny_model: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = tiny_model
    monkeypatch.setattr(finite_check, "probe_logits", lambda *_a: torch.full((2, 4), float("nan")))
    with pytest.raises(MergechatError, match="activations overflow") as err:
        loader.check_finite(model, tokenizer, "float16")
    assert not isinstance(err.value, ModelFolderError) and "bfloat16" in (err.value.hint or "")


def test_copy_good_never_touches_the_good_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    before = {f.name: f.read_bytes() for f in tiny_model_dir.iterdir()}
    for name, case in CASES.items():
        root = tmp_path / name
        root.mkdir()
        case.builder(root, tiny_model_dir)
    assert {f.name: f.read_bytes() for f in tiny_model_dir.iterdir()} == before
    shutil.rmtree(tmp_path)
