"""read_gguf_info on GGUF files written with gguf.GGUFWriter, broken files, and a real load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fixtures.tiny_gguf import (
    CONTEXT,
    HEAD_DIM,
    HEADS,
    HIDDEN,
    KV_HEADS,
    LAYERS,
    build_tiny_gguf,
    expected_parameter_count,
)
from mergechat.core.errors import ModelFolderError
from mergechat.core.model.gguf import read_gguf_info


def test_metadata_of_q8_file(tiny_gguf_file: Path) -> None:
    info = read_gguf_info(tiny_gguf_file)
    assert info.path == tiny_gguf_file
    assert info.architecture == "llama"
    assert info.name == "tiny-gguf-llama"
    assert info.quantization == "Q8_0"
    assert info.context_length == CONTEXT
    assert info.block_count == LAYERS
    assert (info.head_count, info.head_count_kv) == (HEADS, KV_HEADS)
    assert info.embedding_length == HIDDEN
    assert info.head_dim == HEAD_DIM
    assert info.vocab_size is not None and info.vocab_size > 256
    assert info.has_tokenizer and info.has_chat_template
    assert set(info.elements_by_type) == {"F32", "F16", "Q8_0"}
    assert info.parameter_count == expected_parameter_count(info.vocab_size)
    assert info.parameter_count == sum(info.elements_by_type.values())


def test_quantisation_from_tensor_types_without_file_type(tmp_path: Path) -> None:
    path = build_tiny_gguf(tmp_path / "q4.gguf", quant="Q4_1", write_file_type=False)
    info = read_gguf_info(path)
    # No general.file_type: the type holding the most elements names the file.
    assert info.quantization == "Q4_1"
    assert info.elements_by_type["Q4_1"] > info.elements_by_type["F16"]


def test_f16_file_type_name(tmp_path: Path) -> None:
    info = read_gguf_info(build_tiny_gguf(tmp_path / "f16.gguf", quant="F16"))
    assert info.quantization == "F16"
    assert set(info.elements_by_type) == {"F32", "F16"}


def test_no_chat_template(tmp_path: Path) -> None:
    info = read_gguf_info(build_tiny_gguf(tmp_path / "plain.gguf", chat_template=False))
    assert not info.has_chat_template and info.has_tokenizer


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"GGUF", ""),
        (b"definitely not a gguf file" * 4, "magic"),
        (None, ""),  # the real file cut in half
    ],
)
def test_invalid_files(
    tiny_gguf_file: Path, tmp_path: Path, content: bytes | None, reason: str
) -> None:
    bad = tmp_path / "bad.gguf"
    if content is None:
        data = tiny_gguf_file.read_bytes()
        content = data[: len(data) // 2]
    bad.write_bytes(content)
    with pytest.raises(ModelFolderError, match="not a valid GGUF file") as err:
        read_gguf_info(bad)
    assert str(bad) in err.value.message
    assert reason in err.value.message


def test_transformers_loads_the_fixture(tiny_gguf_file: Path) -> None:
    """The fixture is a real GGUF: transformers builds model and tokenizer from it alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = tiny_gguf_file.parent, tiny_gguf_file.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    info = read_gguf_info(tiny_gguf_file)
    assert sum(p.numel() for p in model.parameters()) == info.parameter_count
    assert model.config.max_position_embeddings == info.context_length
    batch: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello!"}], add_generation_prompt=True, return_tensors="pt"
    )
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 3
