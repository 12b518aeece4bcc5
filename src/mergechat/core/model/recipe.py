"""Read a mergekit ``mergekit_config.yml`` into a `MergeInfo` (no weights touched)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergechat.core.dtypes import DType, normalize_dtype

MERGE_CONFIG_NAMES = ("mergekit_config.yml", "mergekit_config.yaml")


@dataclass(frozen=True)
class MergeInfo:
    """What mergekit recorded about how a model was made."""

    merge_method: str | None
    base_model: str | None = None
    #: Source models named in ``models`` or ``slices``, in order, without duplicates.
    models: tuple[str, ...] = ()
    #: ``dtype`` of the merge computation.
    dtype: DType | None = None
    #: ``out_dtype``: the dtype written to disk, when set.
    out_dtype: DType | None = None
    tokenizer_source: str | None = None
    chat_template: str | None = None
    #: Where it was read from.
    source: Path | None = None
    #: Problems found while parsing (the file is still used when possible).
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def effective_dtype(self) -> DType | None:
        """The dtype the merge was saved in: ``out_dtype`` when set, else ``dtype``."""
        return self.out_dtype or self.dtype


def _model_name(ref: object) -> str | None:
    """The model a mergekit ``ModelReference`` names: a string, or ``{model: ..., lora: ...}``."""
    if isinstance(ref, str):
        return ref.strip() or None
    if isinstance(ref, dict):
        if "model" in ref:
            name = _model_name(ref["model"])
            lora = _model_name(ref.get("lora"))
            return f"{name}+{lora}" if name and lora else name
        if "path" in ref:  # a ModelPath: {path: ..., revision: ...}
            path = _model_name(ref["path"])
            revision = ref.get("revision")
            return f"{path}@{revision}" if path and isinstance(revision, str) else path
    return None


def _source_models(section: dict[str, Any]) -> list[str]:
    """Models under ``models: [{model: ...}]`` and ``slices: [{sources: [{model: ...}]}]``."""
    names: list[str] = []
    models = section.get("models")
    if isinstance(models, list):
        names += [n for m in models if isinstance(m, dict) and (n := _model_name(m.get("model")))]
    slices = section.get("slices")
    if isinstance(slices, list):
        for piece in slices:
            sources = piece.get("sources") if isinstance(piece, dict) else None
            if isinstance(sources, list):
                names += [
                    n for s in sources if isinstance(s, dict) and (n := _model_name(s.get("model")))
                ]
    return names


def _dtype_field(data: dict[str, Any], key: str, where: str, warnings: list[str]) -> DType | None:
    raw = data.get(key)
    if raw is None:
        return None
    dtype = normalize_dtype(raw)
    if dtype is None:
        warnings.append(f"{where}: {key} {raw!r} is not float32, bfloat16 or float16; ignored")
    return dtype


def _tokenizer_source(data: dict[str, Any]) -> str | None:
    # ``tokenizer_source: base|union|<model>`` or the newer ``tokenizer: {source: ...}``.
    raw = data.get("tokenizer_source")
    if raw is None and isinstance(data.get("tokenizer"), dict):
        raw = data["tokenizer"].get("source", "union")
    return _model_name(raw)


def read_merge_info(folder: Path) -> MergeInfo | None:
    """Parse ``folder``'s mergekit config; None when there is none.

    Never raises for a bad file: unreadable or invalid YAML gives a `MergeInfo` whose
    ``warnings`` say what was wrong, so the model itself can still be inspected and loaded.
    """
    path = next((folder / n for n in MERGE_CONFIG_NAMES if (folder / n).is_file()), None)
    if path is None:
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return MergeInfo(None, source=path, warnings=(f"cannot read {path.name}: {exc}",))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return MergeInfo(
            None, source=path, warnings=(f"{path.name} is not valid YAML{where}: {problem}",)
        )
    if not isinstance(data, dict):
        return MergeInfo(
            None, source=path, warnings=(f"{path.name} is not a mergekit config (not a mapping)",)
        )
    warnings: list[str] = []
    method = data.get("merge_method")
    if not isinstance(method, str):
        warnings.append(f"{path.name} names no merge_method")
        method = None
    models = _source_models(data)
    modules = data.get("modules")
    if isinstance(modules, dict):
        for module in modules.values():
            if isinstance(module, dict):
                models += _source_models(module)
    template = data.get("chat_template")
    return MergeInfo(
        merge_method=method,
        base_model=_model_name(data.get("base_model")),
        models=tuple(dict.fromkeys(models)),
        dtype=_dtype_field(data, "dtype", path.name, warnings),
        out_dtype=_dtype_field(data, "out_dtype", path.name, warnings),
        tokenizer_source=_tokenizer_source(data),
        chat_template=template if isinstance(template, str) else None,
        source=path,
        warnings=tuple(warnings),
    )


def stored_dtype_warning(info: MergeInfo, stored: DType) -> str | None:
    """A warning when the merge says it saved one dtype but the tensors are in another."""
    saved = info.effective_dtype
    if saved is None or saved == stored:
        return None
    key = "out_dtype" if info.out_dtype is not None else "dtype"
    where = info.source.name if info.source is not None else "the mergekit config"
    return f"{where} says {key} {saved} but the weights are stored as {stored}"
