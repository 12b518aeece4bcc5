"""read_merge_info on a real mergekit output and on hand-written (also broken) configs."""

from __future__ import annotations

from pathlib import Path

from mergechat.core.model.recipe import MergeInfo, read_merge_info, stored_dtype_warning


def _write(folder: Path, text: str, name: str = "mergekit_config.yml") -> Path:
    (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_real_dare_ties_merge(tiny_merge_dir: Path) -> None:
    info = read_merge_info(tiny_merge_dir)
    assert info is not None
    assert info.merge_method == "dare_ties"
    assert info.base_model is not None and info.base_model.endswith("base")
    assert [Path(m).name for m in info.models] == ["a", "b"]
    assert info.dtype == "bfloat16" and info.out_dtype is None
    assert info.effective_dtype == "bfloat16"
    assert info.tokenizer_source == "base"
    assert info.chat_template is None
    assert info.source == tiny_merge_dir / "mergekit_config.yml"
    assert info.warnings == ()


def test_no_config_gives_none(tmp_path: Path) -> None:
    assert read_merge_info(tmp_path) is None


def test_slices_dedup_and_order(tmp_path: Path) -> None:
    _write(
        tmp_path,
        """
slices:
  - sources:
      - model: org/left
        layer_range: [0, 16]
      - model: org/right
        layer_range: [0, 16]
  - sources:
      - model: org/right
        layer_range: [16, 32]
      - model: {model: {path: org/third, revision: v2}, lora: org/adapter}
        layer_range: [16, 32]
merge_method: slerp
base_model: org/left
parameters: {t: 0.5}
dtype: bf16
out_dtype: fp16
chat_template: chatml
""",
    )
    info = read_merge_info(tmp_path)
    assert info is not None
    assert info.merge_method == "slerp"
    assert info.base_model == "org/left"
    assert info.models == ("org/left", "org/right", "org/third@v2+org/adapter")
    assert (info.dtype, info.out_dtype, info.effective_dtype) == ("bfloat16", "float16", "float16")
    assert info.chat_template == "chatml"
    assert info.warnings == ()


def test_yaml_extension_and_tokenizer_forms(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "merge_method: linear\nmodels:\n  - model: x\n  - model: y\n"
        "tokenizer_source: {model: org/tok}\n",
        name="mergekit_config.yaml",
    )
    info = read_merge_info(tmp_path)
    assert info is not None and info.tokenizer_source == "org/tok"
    assert info.models == ("x", "y") and info.base_model is None

    _write(tmp_path, "merge_method: ties\nmodels: [{model: x}]\ntokenizer: {source: union}\n")
    info = read_merge_info(tmp_path)
    assert info is not None and info.tokenizer_source == "union"
    assert info.source == tmp_path / "mergekit_config.yml"


def test_bad_yaml_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    _write(tmp_path, "merge_method: ties\nmodels: [unclosed\n")
    info = read_merge_info(tmp_path)
    assert info is not None and info.merge_method is None
    (warning,) = info.warnings
    assert warning.startswith("mergekit_config.yml is not valid YAML at line")


def test_not_a_mapping(tmp_path: Path) -> None:
    info = read_merge_info(_write(tmp_path, "- just\n- a list\n"))
    assert info is not None and info.merge_method is None
    assert "not a mapping" in info.warnings[0]


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "mergekit_config.yml").write_bytes(b"merge_method: \xff\xfe\n")
    info = read_merge_info(tmp_path)
    assert info is not None and "cannot read mergekit_config.yml" in info.warnings[0]


def test_unknown_dtype_and_missing_method_warn(tmp_path: Path) -> None:
    info = read_merge_info(_write(tmp_path, "models: [{model: a}]\ndtype: int8\n"))
    assert info is not None
    assert info.merge_method is None and info.dtype is None
    assert info.warnings == (
        "mergekit_config.yml names no merge_method",
        "mergekit_config.yml: dtype 'int8' is not float32, bfloat16 or float16; ignored",
    )


def test_stored_dtype_warning() -> None:
    info = MergeInfo("ties", dtype="bfloat16", source=Path("/m/mergekit_config.yml"))
    assert stored_dtype_warning(info, "bfloat16") is None
    assert (
        stored_dtype_warning(info, "float32")
        == "mergekit_config.yml says dtype bfloat16 but the weights are stored as float32"
    )
    with_out = MergeInfo("ties", dtype="float32", out_dtype="bfloat16")
    assert stored_dtype_warning(with_out, "float16") == (
        "the mergekit config says out_dtype bfloat16 but the weights are stored as float16"
    )
    assert stored_dtype_warning(MergeInfo("ties"), "float32") is None
