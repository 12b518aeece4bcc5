"""Inspect a model folder or ``.gguf`` file without loading any weights -> `ModelInfo`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mergechat.core.errors import ModelFolderError
from mergechat.core.model.folder import (
    WEIGHT_HINT,
    find_weights,
    from_folder,
    has_chat_template,
    has_tokenizer_files,
    read_json,
)
from mergechat.core.model.gguf import read_gguf_info
from mergechat.core.model.info import ArchitectureCheck, ModelInfo, ModelProblem
from mergechat.core.model.pickle_scan import PickleCheck, unsafe_pickle_globals
from mergechat.core.model.recipe import read_merge_info
from mergechat.core.visible import shown_path


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
    weights = find_weights(target, names)
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
    config = read_json(target / "config.json")
    if weights is None:
        stray = ", ".join(sorted(n for n in names if n.endswith((".safetensors", ".bin")))[:3])
        found = f" (found {stray}, which transformers does not load)" if stray else ""
        raise ModelFolderError(f"no model weights in {target}{found}", hint=WEIGHT_HINT)
    return from_folder(target, names, config, *weights, (pickle_check, architecture))


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
        has_tokenizer=info.has_tokenizer or has_tokenizer_files(names),
        has_chat_template=info.has_chat_template
        or (folder is not None and has_chat_template(folder, names, warnings)),
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
