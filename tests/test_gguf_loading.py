"""GGUF files through the engine's loader: dequantised, memory fit, chat template, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fixtures.tiny_gguf import (
    CONTEXT,
    _tensor_shapes,
    expected_parameter_count,
    start_gguf,
)
from fixtures.tiny_models import CHAT_TEMPLATE
from mergechat.cli import main as cli
from mergechat.core.detect.capabilities import Recommendation
from mergechat.core.detect.policy import needed_bytes
from mergechat.core.engine.error_translation import translate
from mergechat.core.errors import ModelFolderError
from mergechat.core.model.inspection import inspect_model


def _write_gguf(path: Path, *, arch: str = "llama", q8_1_tensor: str | None = None) -> Path:
    """A tiny GGUF like the fixture's, with another architecture name or one Q8_1 tensor.

    Q8_1 has no dequantiser in the ``gguf`` package, so its bytes are written raw (zeros).
    """
    import gguf

    writer, _special, vocab = start_gguf(path, arch)
    for name, shape in _tensor_shapes(vocab).items():
        if name == q8_1_tensor:
            q8_1 = gguf.GGMLQuantizationType.Q8_1
            block, size = gguf.GGML_QUANT_SIZES[q8_1]
            raw = np.zeros((shape[0], shape[1] // block * size), dtype=np.uint8)
            writer.add_tensor(name, raw, raw_dtype=q8_1)
        else:
            writer.add_tensor(name, np.full(shape, 0.01, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _error_lines(err: str) -> list[str]:
    """stderr's one `mergechat: error:` line and its hint, which end it; no traceback.

    (In this test process tqdm was imported before the CLI could set ``TQDM_DISABLE``, so
    transformers' GGUF progress bar may come first; the subprocess test in test_demo.py checks
    that a real run prints none.)
    """
    assert "Traceback" not in err
    lines = err.rstrip("\n").splitlines()
    assert [x for x in lines if x.startswith("mergechat: error")] == lines[-2:-1], err
    assert lines[-1].startswith("  hint: ")
    return lines[-2:]


# -- inspection and the memory fit ----------------------------------------------------------------
def test_memory_fit_counts_the_dequantised_weights(tiny_gguf_file: Path) -> None:
    info = inspect_model(tiny_gguf_file)
    count = expected_parameter_count(info.vocab_size or 0)
    assert info.parameter_count == count
    assert info.gguf_quantization == "Q8_0"
    # Q8_0 stores about a byte per weight; loaded, each weight takes its dtype's full size.
    assert info.weights_bytes_on_disk < count * 2
    assert info.weights_bytes("float32") == count * 4
    assert info.weights_bytes("bfloat16") == count * 2
    needed = needed_bytes(info, "float32", 16)
    assert needed is not None and needed > count * 4


@pytest.mark.slow
def test_loader_loads_gguf_dense_in_the_chosen_dtype(tiny_gguf_file: Path) -> None:
    from mergechat.core.engine import loader

    info = inspect_model(tiny_gguf_file)
    rec = Recommendation("cpu", "bfloat16", None, "test")
    loaded = loader.load_weights(info, rec, trust_remote_code=False)
    model = loaded.model
    assert loaded.state.dtype == "bfloat16" and loaded.state.device == "cpu"
    # Dense, not packed: a plain model whose memory is what the fit predicted.
    assert getattr(model, "hf_quantizer", None) is None and not model.is_quantized
    assert {str(p.dtype) for p in model.parameters()} == {"torch.bfloat16"}
    in_memory = sum(p.numel() * p.element_size() for p in model.parameters())
    assert in_memory == info.weights_bytes("bfloat16")
    # Tokenizer and chat template come from the file itself.
    assert loaded.tokenizer.chat_template == CHAT_TEMPLATE
    assert not loaded.state.fallback_template
    assert loaded.state.context_max == CONTEXT
    assert not loaded.exact  # float32 dequantised values do not all fit in bfloat16


# -- one-shot and doctor on a GGUF file and on a folder holding one -------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("as_folder", [False, True], ids=["file", "folder"])
def test_oneshot_json_on_gguf(
    tiny_gguf_file: Path, as_folder: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tiny_gguf_file.parent if as_folder else tiny_gguf_file
    argv = [str(path), "--prompt", "Hello", "--max-new-tokens", "4", "--temperature", "0"]
    assert cli.main([*argv, "--json", "--dtype", "float32"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dtype"] == "float32" and data["device"] == "cpu"
    assert data["new_tokens"] >= 1 and isinstance(data["reply"], str)


@pytest.mark.slow
def test_doctor_shows_the_quantisation_type(
    tiny_gguf_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["doctor", str(tiny_gguf_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    model = report["model"]
    assert model["weights_format"] == "gguf" and model["gguf_quantization"] == "Q8_0"
    fit = {(v["dtype"]): v["fit"]["needed_bytes"] for v in report["assessment"]["verdicts"]}
    assert fit["float32"] > model["parameter_count"] * 4
    assert cli.main(["doctor", str(tiny_gguf_file)]) == 0
    format_line = next(x for x in capsys.readouterr().out.splitlines() if "Format" in x)
    assert "gguf Q8_0" in format_line


# -- what transformers cannot read: one clear line ------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "options", "error", "hint"),
    [
        (
            "grok.gguf",
            {"arch": "grok"},
            "this version of transformers cannot load GGUF files of architecture grok",
            "safetensors",
        ),
        (
            "q81.gguf",
            {"q8_1_tensor": "blk.0.attn_q.weight"},
            "transformers cannot dequantise the GGUF quantisation type Q8_1 used in this file",
            "Q8_0",
        ),
    ],
)
def test_an_architecture_or_quantisation_transformers_cannot_read_is_one_clear_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    options: dict[str, str],
    error: str,
    hint: str,
) -> None:
    path = _write_gguf(tmp_path / name, **options)
    # Inspection reads it; loading cannot.
    assert inspect_model(path).model_type == options.get("arch", "llama")
    assert cli.main([str(path), "--prompt", "hi", "--max-new-tokens", "2"]) == 2  # bad input
    error_line, hint_line = _error_lines(capsys.readouterr().err)
    assert error_line == f"mergechat: error: {error}"
    assert hint in hint_line


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("GGUF model with architecture rwkv6 is not supported yet.", "architecture rwkv6"),
        (
            "GGUF architecture 'jamba' is not supported yet. Supported: ['lfm2', 'qwen35'].",
            "architecture jamba",
        ),
        (
            "Cannot rebuild a config from a GGUF file of architecture 'olmo'. Supported: [].",
            "architecture olmo",
        ),
        ("Dequantization for Q8_K is not yet implemented", "quantisation type Q8_K"),
        ("ggml type 9 is not supported yet. Supported quantized types: Q4_0 (2).", "type Q8_1"),
        (
            "Cannot build a tokenizer from a GGUF file stating tokenizer 'rwkv'. Supported: [].",
            "tokenizer type rwkv",
        ),
    ],
)
def test_translate_gguf_failures(text: str, fragment: str) -> None:
    exc: Exception = NotImplementedError(text) if "Dequant" in text else ValueError(text)
    error = translate(exc)
    assert isinstance(error, ModelFolderError)
    assert fragment in error.message
    assert "\n" not in error.message and error.hint
