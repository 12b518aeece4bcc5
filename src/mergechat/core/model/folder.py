"""A Hugging Face model folder (config.json, safetensors or pickled weights, tokenizer files)
read into `ModelInfo` without loading any weights; `inspection` picks this or the GGUF reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mergechat.core.dtypes import DType, normalize_dtype
from mergechat.core.errors import ModelFolderError
from mergechat.core.model.info import (
    ArchitectureCheck,
    ModelInfo,
    ModelProblem,
    WeightsFormat,
    config_value,
    embedding_rows,
    json_problem,
    pickle_problem,
    positive_int,
    tokenizer_size_problem,
)
from mergechat.core.model.pickle_scan import PickleCheck
from mergechat.core.model.recipe import read_merge_info, stored_dtype_warning
from mergechat.core.model.safetensors_header import SafetensorsHeader, read_header, summarize
from mergechat.core.visible import shown_path

_ST_INDEX, _ST_SINGLE = "model.safetensors.index.json", "model.safetensors"
_BIN_INDEX, _BIN_SINGLE = "pytorch_model.bin.index.json", "pytorch_model.bin"
_CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
# Config keys that hold the same fact under different names across architectures.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx")
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
_HEAD_KEYS = ("num_attention_heads", "n_head")
_KV_HEAD_KEYS = ("num_key_value_heads", "n_head_kv", "multi_query_group_num")
_HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model")
_INTERMEDIATE_KEYS = ("intermediate_size", "n_inner", "ffn_hidden_size")
_TOKENIZER_HINT = (
    "copy tokenizer.json and tokenizer_config.json from the base model (mergekit: "
    "--copy-tokenizer or tokenizer_source)"
)
WEIGHT_HINT = (
    "expected model.safetensors, model.safetensors.index.json with its shards, "
    "pytorch_model.bin, or a single .gguf file"
)


def from_folder(
    folder: Path,
    names: set[str],
    config: dict[str, Any],
    fmt: WeightsFormat,
    files: tuple[Path, ...],
    weight_map: dict[str, str],
    checks: tuple[PickleCheck, ArchitectureCheck | None],
) -> ModelInfo:
    pickle_check, architecture = checks
    warnings: list[str] = []
    problems: list[ModelProblem] = []
    parameter_count: int | None = None
    stored: tuple[DType, ...] = ()
    headers: list[SafetensorsHeader] = []
    if fmt == "safetensors":
        headers = [read_header(f) for f in files]
        summary = summarize(headers)
        parameter_count, stored = summary.parameter_count, summary.stored_dtypes
        held = {h.path.relative_to(folder).as_posix(): {t.name for t in h.tensors} for h in headers}
        missing = [t for t, shard in weight_map.items() if t not in held.get(shard, ())]
        if missing:
            warnings.append(
                f"{_ST_INDEX} maps {len(missing)} tensor(s) to shards that do not hold them "
                f"(first: {missing[0]})"
            )
    else:
        warnings.append(
            f"weights are pickled ({files[0].name}): the parameter count and stored dtype "
            "are unknown until the model is loaded"
        )
        problem = pickle_problem(files, pickle_check)
        problems.extend([problem] if problem else [])

    raw_dtype = config_value(config, "dtype", "torch_dtype")
    declared = normalize_dtype(raw_dtype) if raw_dtype is not None else None
    if isinstance(raw_dtype, str) and declared is None and raw_dtype != "auto":
        warnings.append(f"config.json declares dtype {raw_dtype!r}, which mergechat does not run")
    if declared is not None and stored and stored[0] != declared:
        mostly = "" if len(stored) == 1 else "mostly "
        warnings.append(
            f"config.json declares {declared} but the weights are stored as {mostly}{stored[0]}"
        )
    merge = read_merge_info(folder)
    if merge is not None:
        warnings.extend(merge.warnings)
        if stored and (mismatch := stored_dtype_warning(merge, stored[0])):
            warnings.append(mismatch)

    vocab_size = positive_int(config_value(config, "vocab_size"))
    archs = config.get("architectures")
    archs = archs if isinstance(archs, list) else []
    model_type = config_value(config, "model_type")
    ships_code = "auto_map" in config
    if ships_code:
        warnings.append(
            "the folder ships its own Python code (auto_map in config.json); mergechat runs it "
            "only with --trust-remote-code or [model] trust_remote_code = true"
        )
    elif architecture is not None:  # with its own code, the folder defines it itself
        top_type = config.get("model_type")
        problem = architecture(top_type if isinstance(top_type, str) else None, archs)
        problems.extend([problem] if problem else [])
    has_tokenizer = has_tokenizer_files(names)
    if not has_tokenizer:
        problems.append(ModelProblem(f"no tokenizer files in {folder}", hint=_TOKENIZER_HINT))
    # The matrix transformers builds has config.json's vocab_size rows; the header is a fallback.
    rows, rows_source = vocab_size, "config.json vocab_size"
    if rows is None:
        rows, rows_source = embedding_rows(headers)
    size_problem = tokenizer_size_problem(folder / "tokenizer.json", rows, rows_source)
    if size_problem is not None:
        warnings.append(size_problem.message)  # also a warning: doctor lists it with the rest
        problems.append(size_problem)
    heads = positive_int(config_value(config, *_HEAD_KEYS))
    hidden = positive_int(config_value(config, *_HIDDEN_KEYS))
    head_dim = positive_int(config_value(config, "head_dim"))
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads
    return ModelInfo(
        path=folder,
        name=folder.name,
        model_type=model_type if isinstance(model_type, str) else None,
        architectures=tuple(a for a in archs if isinstance(a, str)),
        declared_dtype=declared,
        stored_dtypes=stored,
        parameter_count=parameter_count,
        weights_format=fmt,
        weight_files=files,
        weights_bytes_on_disk=sum(f.stat().st_size for f in files),
        has_tokenizer=has_tokenizer,
        has_chat_template=has_chat_template(folder, names, warnings),
        has_generation_config="generation_config.json" in names,
        context_length=positive_int(config_value(config, *_CONTEXT_KEYS)),
        vocab_size=vocab_size,
        num_layers=positive_int(config_value(config, *_LAYER_KEYS)),
        num_kv_heads=positive_int(config_value(config, *_KV_HEAD_KEYS)) or heads,
        head_dim=head_dim,
        hidden_size=hidden,
        intermediate_size=positive_int(config_value(config, *_INTERMEDIATE_KEYS)),
        num_heads=heads,
        merge=merge,
        ships_code=ships_code,
        warnings=tuple(warnings),
        problems=tuple(problems),
    )


def find_weights(
    folder: Path, names: set[str]
) -> tuple[WeightsFormat, tuple[Path, ...], dict[str, str]] | None:
    """The weight format, its files (shards in order) and the index's tensor -> shard map."""
    layouts: tuple[tuple[WeightsFormat, str, str], ...] = (
        ("safetensors", _ST_INDEX, _ST_SINGLE),
        ("pytorch-bin", _BIN_INDEX, _BIN_SINGLE),
    )
    for fmt, index, single in layouts:
        # The same order as transformers' from_pretrained: the single file wins over an index.
        if single in names:
            return fmt, (folder / single,), {}
        if index in names:
            weight_map = _read_weight_map(folder / index)
            shards = tuple(folder / s for s in sorted(set(weight_map.values())))
            for shard in shards:
                if not shard.is_file():
                    raise ModelFolderError(
                        f"missing shard {shard.name}: {index} names it but it is not in {folder}",
                        hint="the download is incomplete; fetch the missing shard",
                    )
            return fmt, shards, weight_map
    return None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; `ModelFolderError` naming the file and line otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ModelFolderError(f"cannot read {shown_path(path)}: {reason}") from exc
    except json.JSONDecodeError as exc:
        problem = json_problem(exc)
        raise ModelFolderError(f"{shown_path(path)} is not valid JSON: {problem}") from exc
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path} is not valid: expected a JSON object")
    return data


def _read_weight_map(index: Path) -> dict[str, str]:
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelFolderError(f"{index} has no weight_map of tensors to shard files")
    return {str(k): str(v) for k, v in weight_map.items()}


def has_tokenizer_files(names: set[str]) -> bool:
    files = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json"}
    return bool(names & files) or {"vocab.json", "merges.txt"} <= names


def has_chat_template(folder: Path, names: set[str], warnings: list[str]) -> bool:
    if any(n in names for n in _CHAT_TEMPLATE_FILES):
        return True
    if "tokenizer_config.json" not in names:
        return False
    try:
        template = read_json(folder / "tokenizer_config.json").get("chat_template")
    except ModelFolderError as exc:
        warnings.append(f"{exc.message}; the tokenizer may not load")
        return False
    return bool(template)
