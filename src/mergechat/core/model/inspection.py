"""Inspect a model folder or ``.gguf`` file without loading any weights -> `ModelInfo`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from mergechat.core.dtypes import DType, normalize_dtype
from mergechat.core.errors import ModelFolderError
from mergechat.core.model.gguf import read_gguf_info
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
from mergechat.core.model.pickle_scan import PickleCheck, unsafe_pickle_globals
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
_WEIGHT_HINT = (
    "expected model.safetensors, model.safetensors.index.json with its shards, "
    "pytorch_model.bin, or a single .gguf file"
)


def inspect_model(
    path: str | Path,
    *,
    strict: bool = False,
    pickle_check: PickleCheck = unsafe_pickle_globals,
    architecture_check: ArchitectureCheck | None = None,
) -> ModelInfo:
    """Describe the model at ``path`` (a folder or a ``.gguf`` file) from its files alone.

    Reads config.json, the safetensors headers (never the tensor data), the pickle opcodes of
    a ``pytorch_model.bin`` (``pickle_check``; never executed), tokenizer and mergekit files. Raises
    `ModelFolderError` with one clear line when the path is not a model at all. Problems that
    stop it from chatting although it could be described go to `ModelInfo.problems` (with
    ``strict``, the first is raised: `require_usable`); problems that still allow loading
    become ``ModelInfo.warnings``. The architecture is checked only with ``architecture_check``
    (it needs transformers: `mergechat.core.detect.model_support.inspect_model` passes it).
    """
    info = _inspect(path, pickle_check, architecture_check)
    if strict:
        require_usable(info)
    return info


def require_usable(info: ModelInfo) -> None:
    """Raise the first of ``info.problems`` as a `ModelFolderError` (exit code 2)."""
    if info.problems:
        first = info.problems[0]
        raise ModelFolderError(first.message, hint=first.hint)


def missing_path_error(given: Path) -> ModelFolderError:
    """The one error for a model path that does not exist (the CLI and the app say the same)."""
    return ModelFolderError(
        f"model path does not exist: {shown_path(given)}",
        hint="give a local model folder or .gguf file; mergechat never downloads from a hub",
    )


def _inspect(
    path: str | Path, pickle_check: PickleCheck, architecture: ArchitectureCheck | None
) -> ModelInfo:
    given = Path(path).expanduser()
    if not given.exists():
        raise missing_path_error(given)
    target = given.resolve()
    if target.is_file():
        if target.suffix.lower() == ".gguf":
            return _from_gguf(target, target, folder=None, names=set())
        raise ModelFolderError(
            f"not a model: {target} is a file but not a .gguf file",
            hint="give a model folder (with config.json) or a .gguf file",
        )
    try:
        names = {entry.name for entry in target.iterdir()}
    except OSError as exc:
        raise ModelFolderError(f"cannot read {shown_path(target)}: {exc.strerror or exc}") from exc
    if not names:
        raise ModelFolderError(f"model folder is empty: {shown_path(target)}")
    ggufs = sorted(n for n in names if n.lower().endswith(".gguf"))
    weights = _find_weights(target, names)
    if weights is None and ggufs:
        if len(ggufs) > 1:
            raise ModelFolderError(
                f"{target} holds {len(ggufs)} .gguf files ({', '.join(ggufs[:3])}...)",
                hint="pass the .gguf file to load",
            )
        return _from_gguf(target, target / ggufs[0], folder=target, names=names)
    if "config.json" not in names:
        raise ModelFolderError(
            f"not a model folder: no config.json in {target}",
            hint="a Hugging Face model folder needs config.json; or pass a .gguf file",
        )
    config = _read_json(target / "config.json")
    if weights is None:
        stray = ", ".join(sorted(n for n in names if n.endswith((".safetensors", ".bin")))[:3])
        found = f" (found {stray}, which transformers does not load)" if stray else ""
        raise ModelFolderError(f"no model weights in {target}{found}", hint=_WEIGHT_HINT)
    return _from_folder(target, names, config, *weights, (pickle_check, architecture))


def _from_folder(
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
    has_tokenizer = _has_tokenizer(names)
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
        has_chat_template=_has_chat_template(folder, names, warnings),
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


def _from_gguf(given: Path, file: Path, folder: Path | None, names: set[str]) -> ModelInfo:
    info = read_gguf_info(file)
    merge = read_merge_info(folder) if folder is not None else None
    warnings: list[str] = list(merge.warnings) if merge is not None else []
    result = ModelInfo(
        path=given,
        name=folder.name if folder is not None else file.stem,
        model_type=info.architecture,
        architectures=(),
        declared_dtype=None,
        # GGUF tensors are dequantised on load, so no stored torch dtype applies.
        stored_dtypes=(),
        parameter_count=info.parameter_count,
        weights_format="gguf",
        weight_files=(file,),
        weights_bytes_on_disk=file.stat().st_size,
        has_tokenizer=info.has_tokenizer or _has_tokenizer(names),
        has_chat_template=info.has_chat_template
        or (folder is not None and _has_chat_template(folder, names, warnings)),
        has_generation_config="generation_config.json" in names,
        context_length=info.context_length,
        vocab_size=info.vocab_size,
        num_layers=info.block_count,
        num_kv_heads=info.head_count_kv,
        head_dim=info.head_dim,
        hidden_size=info.embedding_length,
        intermediate_size=info.feed_forward_length,
        num_heads=info.head_count,
        merge=merge,
        gguf_file=file,
        gguf_quantization=info.quantization,
        warnings=tuple(warnings),
    )
    if result.has_tokenizer:
        return result
    missing = ModelProblem(
        f"no tokenizer in {file.name} (no tokenizer.ggml.model) and none beside it",
        hint="convert the model again with its tokenizer (llama.cpp convert_hf_to_gguf.py)",
    )
    return replace(result, problems=(missing,))


def _find_weights(
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


def _read_json(path: Path) -> dict[str, Any]:
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
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelFolderError(f"{index} has no weight_map of tensors to shard files")
    return {str(k): str(v) for k, v in weight_map.items()}


def _has_tokenizer(names: set[str]) -> bool:
    files = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json"}
    return bool(names & files) or {"vocab.json", "merges.txt"} <= names


def _has_chat_template(folder: Path, names: set[str], warnings: list[str]) -> bool:
    if any(n in names for n in _CHAT_TEMPLATE_FILES):
        return True
    if "tokenizer_config.json" not in names:
        return False
    try:
        template = _read_json(folder / "tokenizer_config.json").get("chat_template")
    except ModelFolderError as exc:
        warnings.append(f"{exc.message}; the tokenizer may not load")
        return False
    return bool(template)
