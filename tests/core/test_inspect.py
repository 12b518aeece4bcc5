"""inspect_model on real tiny models, a real mergekit merge, GGUF files and broken folders."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from mergechat.core.errors import ModelFolderError
from mergechat.core.model.inspection import inspect_model
from mergechat.core.model.safetensors_header import read_header


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def _to_float32(folder: Path) -> None:
    """Rewrite every safetensors file in ``folder`` as float32 (mergekit #604's situation)."""
    from safetensors.torch import load_file, save_file

    for file in folder.glob("*.safetensors"):
        tensors = {k: v.float() for k, v in load_file(file).items()}
        save_file(tensors, file, metadata={"format": "pt"})


@pytest.fixture(scope="module")
def sharded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fixtures.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("sharded") / "m", max_shard_size="50KB")


# --- healthy models ---------------------------------------------------------------------------


def test_tiny_model_every_field(tiny_model_dir: Path) -> None:
    info = inspect_model(str(tiny_model_dir))
    weights = tiny_model_dir / "model.safetensors"
    assert info.path == tiny_model_dir.resolve()
    assert info.name == tiny_model_dir.name
    assert info.model_type == "llama"
    assert info.architectures == ("LlamaForCausalLM",)
    assert info.declared_dtype == "bfloat16"
    assert info.stored_dtypes == ("bfloat16",)
    assert info.weights_format == "safetensors"
    assert info.weight_files == (weights,)
    assert info.weights_bytes_on_disk == weights.stat().st_size
    assert info.has_tokenizer and info.has_chat_template and info.has_generation_config
    assert info.context_length == 512
    assert (info.vocab_size, info.num_layers, info.num_kv_heads, info.head_dim) == (384, 2, 2, 16)
    assert info.merge is None and info.gguf_file is None and info.gguf_quantization is None
    assert not info.ships_code
    assert info.warnings == ()
    assert info.native_dtype == info.disk_dtype == "bfloat16"
    assert info.weights_bytes("float32") == info.parameter_count * 4  # type: ignore[operator]


def test_parameter_count_is_exact(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="bfloat16")
    expected = sum(p.numel() for p in model.parameters())
    assert inspect_model(tiny_model_dir).parameter_count == expected


def test_merge_dir_has_merge_info(tiny_merge_dir: Path) -> None:
    info = inspect_model(tiny_merge_dir)
    assert info.merge is not None
    assert info.merge.merge_method == "dare_ties"
    assert info.merge.dtype == "bfloat16" and info.merge.out_dtype is None
    assert info.merge.tokenizer_source == "base"
    assert len(info.merge.models) == 2
    assert info.declared_dtype == "bfloat16" and info.stored_dtypes == ("bfloat16",)
    assert info.native_dtype == "bfloat16"
    assert info.warnings == ()


def test_sharded_model_reads_every_shard(sharded_dir: Path, tiny_model_dir: Path) -> None:
    info = inspect_model(sharded_dir)
    shards = sorted(sharded_dir.glob("model-*.safetensors"))
    assert len(shards) > 1
    assert info.weight_files == tuple(shards)
    assert info.weights_bytes_on_disk == sum(f.stat().st_size for f in shards)
    # Same config and seed as the single-file model: same exact count.
    assert info.parameter_count == inspect_model(tiny_model_dir).parameter_count
    assert info.stored_dtypes == ("bfloat16",)
    assert info.warnings == ()


def test_missing_shard_is_named(sharded_dir: Path, tmp_path: Path) -> None:
    folder = _copy(sharded_dir, tmp_path / "m")
    victim = sorted(folder.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(ModelFolderError, match=f"missing shard {victim.name}"):
        inspect_model(folder)


def test_index_naming_the_wrong_shard_warns(sharded_dir: Path, tmp_path: Path) -> None:
    folder = _copy(sharded_dir, tmp_path / "m")
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    first, *others = sorted(set(data["weight_map"].values()))
    data["weight_map"]["lm_head.weight"] = (
        first if data["weight_map"]["lm_head.weight"] != first else others[0]
    )
    index.write_text(json.dumps(data))
    (warning,) = inspect_model(folder).warnings
    assert "maps 1 tensor(s) to shards that do not hold them (first: lm_head.weight)" in warning


def test_garbage_index_is_named(sharded_dir: Path, tmp_path: Path) -> None:
    folder = _copy(sharded_dir, tmp_path / "m")
    (folder / "model.safetensors.index.json").write_text('{"weight_map": ')
    with pytest.raises(ModelFolderError, match=r"index\.json is not valid JSON"):
        inspect_model(folder)


# --- dtype bookkeeping -------------------------------------------------------------------------


def test_declared_bf16_stored_float32_warns(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    _to_float32(folder)
    info = inspect_model(folder)
    assert info.declared_dtype == "bfloat16"
    assert info.stored_dtypes == ("float32",)
    assert info.disk_dtype == "float32"
    assert info.warnings == ("config.json declares bfloat16 but the weights are stored as float32",)


def test_merge_dtype_disagreeing_with_stored_warns(tiny_merge_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_merge_dir, tmp_path / "m")
    _to_float32(folder)
    warnings = inspect_model(folder).warnings
    assert "config.json declares bfloat16 but the weights are stored as float32" in warnings
    merge_warning = "mergekit_config.yml says dtype bfloat16 but the weights are stored as float32"
    assert merge_warning in warnings


def test_old_torch_dtype_key(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    _edit_json(folder / "config.json", dtype=None, torch_dtype="bfloat16")
    info = inspect_model(folder)
    assert info.declared_dtype == "bfloat16"
    assert info.warnings == ()


def test_text_config_nesting(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    text = {
        "model_type": "llama",
        "torch_dtype": "bfloat16",
        "max_position_embeddings": 8192,
        "vocab_size": 384,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "hidden_size": 64,
    }
    config = {"architectures": ["Fancy3ForConditionalGeneration"], "text_config": text}
    (folder / "config.json").write_text(json.dumps(config))
    info = inspect_model(folder)
    assert info.architectures == ("Fancy3ForConditionalGeneration",)
    assert info.model_type == "llama"
    assert info.declared_dtype == "bfloat16"
    assert info.context_length == 8192
    # No num_key_value_heads / head_dim: heads and hidden_size / heads stand in.
    assert (info.num_layers, info.num_kv_heads, info.head_dim) == (2, 4, 16)


def test_unknown_declared_dtype_warns(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    _edit_json(folder / "config.json", dtype="float64")
    info = inspect_model(folder)
    assert info.declared_dtype is None
    assert any("'float64'" in w for w in info.warnings)


# --- tokenizer, chat template, code ---------------------------------------------------------------


def test_no_tokenizer(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, folder / name)
    info = inspect_model(folder)
    assert not info.has_tokenizer and not info.has_chat_template and not info.has_generation_config


def test_no_chat_template(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    (folder / "chat_template.jinja").unlink()
    info = inspect_model(folder)
    assert info.has_tokenizer and not info.has_chat_template


@pytest.mark.parametrize("where", ["chat_template.jinja", "chat_template.json", "tokenizer_config"])
def test_chat_template_sources(tiny_model_dir: Path, tmp_path: Path, where: str) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()
    if where == "tokenizer_config":
        _edit_json(folder / "tokenizer_config.json", chat_template=template)
    elif where == "chat_template.json":
        (folder / where).write_text(json.dumps({"chat_template": template}))
    else:
        (folder / where).write_text(template)
    assert inspect_model(folder).has_chat_template


def test_tokenizer_larger_than_embedding_warns(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    folder = _copy(tiny_model_dir, tmp_path / "m")
    _edit_json(folder / "config.json", vocab_size=256)
    n_tokens = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size(True)
    (warning,) = inspect_model(folder).warnings
    assert f"the tokenizer has {n_tokens} tokens" in warning
    assert "only 256 rows" in warning


def test_auto_map_means_ships_code(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    _edit_json(folder / "config.json", auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"})
    assert inspect_model(folder).ships_code


# --- other weight formats -------------------------------------------------------------------------


def test_pytorch_bin_only(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    folder = _copy(tiny_model_dir, tmp_path / "m")
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    info = inspect_model(folder)
    assert info.weights_format == "pytorch-bin"
    assert info.weight_files == (folder.resolve() / "pytorch_model.bin",)
    assert info.parameter_count is None and info.stored_dtypes == ()
    assert info.declared_dtype == "bfloat16" and info.native_dtype == "bfloat16"
    assert any("pickled" in w for w in info.warnings)


def test_gguf_file(tiny_gguf_file: Path) -> None:
    from fixtures.tiny_gguf import CONTEXT, expected_parameter_count

    info = inspect_model(tiny_gguf_file)
    assert info.weights_format == "gguf"
    assert info.path == info.gguf_file == tiny_gguf_file.resolve()
    assert info.name == "tiny-q8"
    assert info.model_type == "llama"
    assert info.gguf_quantization == "Q8_0"
    assert info.vocab_size is not None
    assert info.parameter_count == expected_parameter_count(info.vocab_size)
    assert info.context_length == CONTEXT
    assert (info.num_layers, info.num_kv_heads, info.head_dim) == (2, 2, 16)
    assert info.has_tokenizer and info.has_chat_template and not info.has_generation_config
    assert info.weights_bytes_on_disk == tiny_gguf_file.stat().st_size
    assert info.disk_dtype == "float32"


def test_folder_with_only_a_gguf(tiny_gguf_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "quantised"
    folder.mkdir()
    shutil.copy(tiny_gguf_file, folder / "model-q8.gguf")
    info = inspect_model(folder)
    assert info.path == folder.resolve()
    assert info.name == "quantised"
    assert info.gguf_file == folder.resolve() / "model-q8.gguf"
    assert info.weights_format == "gguf" and info.gguf_quantization == "Q8_0"


def test_folder_with_several_ggufs(tiny_gguf_file: Path, tmp_path: Path) -> None:
    for name in ("a.gguf", "b.gguf"):
        shutil.copy(tiny_gguf_file, tmp_path / name)
    with pytest.raises(ModelFolderError, match=r"2 \.gguf files"):
        inspect_model(tmp_path)


def test_garbage_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(ModelFolderError, match="not a valid GGUF file"):
        inspect_model(bad)


# --- broken paths and folders ---------------------------------------------------------------------


def test_nonexistent_path(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="model path does not exist") as err:
        inspect_model(tmp_path / "nope")
    assert err.value.exit_code == 2


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="model folder is empty"):
        inspect_model(tmp_path)


def test_plain_text_file(tmp_path: Path) -> None:
    note = tmp_path / "notes.txt"
    note.write_text("hello")
    with pytest.raises(ModelFolderError, match=r"is a file but not a \.gguf file"):
        inspect_model(note)


def test_no_config_and_no_gguf(tiny_model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_model_dir / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(ModelFolderError, match=r"no config\.json"):
        inspect_model(tmp_path)


def test_garbage_config_names_file_and_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    (folder / "config.json").write_text('{\n  "model_type": "llama",\n  oops\n}')
    with pytest.raises(ModelFolderError) as err:
        inspect_model(folder)
    assert str(folder.resolve() / "config.json") in err.value.message
    assert "line 3" in err.value.message
    assert "\n" not in err.value.message


def test_no_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "weights.safetensors")
    with pytest.raises(ModelFolderError, match=r"no model weights .*found weights\.safetensors"):
        inspect_model(folder)


def _write_safetensors(
    path: Path, header: bytes, data: bytes = b"", length: int | None = None
) -> None:
    size = len(header) if length is None else length
    path.write_bytes(struct.pack("<Q", size) + header + data)


@pytest.mark.parametrize(
    ("header", "length", "reason"),
    [
        (b"", 0, "header length 0"),
        (b"{}", 10**9, "header length 1000000000"),
        (b"\xff\xfe not json", None, "not UTF-8"),
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "not a JSON object"),
        (b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 0]}}', None, "data_offsets"),
        (b'{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}', None, "disagree"),
        (b'{"w": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}}', None, "not valid JSON"),
        # What safetensors refuses at load is refused here too.
        (b'{"w": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}', None, "unknown variant"),
        (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', None, "fill the file"),
    ],
)
def test_corrupt_header_names_file(
    tiny_model_dir: Path, tmp_path: Path, header: bytes, length: int | None, reason: str
) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    weights = folder / "model.safetensors"
    _write_safetensors(weights, header, b"\0" * 8, length)
    with pytest.raises(ModelFolderError, match="corrupt safetensors header") as err:
        inspect_model(folder)
    assert str(weights.resolve()) in err.value.message
    assert reason in err.value.message


def test_too_short_safetensors(tmp_path: Path) -> None:
    short = tmp_path / "model.safetensors"
    short.write_bytes(b"\x01\x02")
    with pytest.raises(ModelFolderError, match="only 2 bytes"):
        read_header(short)


def test_truncated_safetensors(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelFolderError, match="truncated safetensors file") as err:
        inspect_model(folder)
    assert str(weights.resolve()) in err.value.message


def test_header_summary_counts_all_tensors_but_floats_only_for_dtypes(tmp_path: Path) -> None:
    from mergechat.core.model.safetensors_header import summarize

    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 32]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [32, 40]},
        "ids": {"dtype": "I64", "shape": [3], "data_offsets": [40, 64]},
    }
    path = tmp_path / "x.safetensors"
    _write_safetensors(path, json.dumps(header).encode(), b"\0" * 64)
    parsed = read_header(path)
    assert parsed.metadata == {"format": "pt"}
    summary = summarize([parsed])
    assert summary.parameter_count == 16 + 2 + 3
    assert summary.stored_dtypes == ("bfloat16", "float32")
    assert summary.elements_by_code == {"BF16": 16, "F32": 2, "I64": 3}


def test_reading_headers_never_imports_torch(tiny_model_dir: Path) -> None:
    # The UI and doctor inspect models: safe_open(framework="numpy") imports numpy, never torch.
    code = (
        "import sys; from pathlib import Path\n"
        "from mergechat.core.model.safetensors_header import read_header\n"
        f"assert read_header(Path({str(tiny_model_dir / 'model.safetensors')!r})).tensors\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
