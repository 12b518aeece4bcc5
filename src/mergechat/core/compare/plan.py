"""Which models a comparison shows: a merge with its base and sources, or up to four given ones.

Only local files are read (the merge's ``mergekit_config.yml``, tokenizer files, the Hugging Face
cache); nothing is downloaded, so a source that is not on this machine is one clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal

from mergechat.core.errors import BadInputError
from mergechat.core.model.recipe import read_merge_info
from mergechat.core.model.target import looks_remote, parse_target, url_text

MAX_MODELS: Final = 4
Role = Literal["merge", "base", "source", "model"]


@dataclass(frozen=True)
class CompareModel:
    """One column of a comparison: what it is, where it lives, and what to say about it."""

    #: Short display name (folder or file name, or the URL).
    name: str
    role: Role
    #: A local folder or ``.gguf`` file, or a `RemotePath` for a server URL.
    path: Path
    #: What the user or the recipe wrote (a path, a Hugging Face id, a URL).
    given: str
    notes: tuple[str, ...] = ()
    #: Why this model cannot be compared (it is still shown, with this error).
    error: str | None = None

    @property
    def remote(self) -> bool:
        """True for a model on a server."""
        return looks_remote(self.path)

    @property
    def label(self) -> str:
        """``merge: name`` style title for a column or a heading."""
        return self.name if self.role == "model" else f"{self.role}: {self.name}"


@dataclass(frozen=True)
class ComparePlan:
    """The models in column order; the first is the reference the others are scored against."""

    models: tuple[CompareModel, ...]
    #: True when read from a merge recipe (index 0 merge, 1 base when the recipe names one).
    from_recipe: bool = False

    @property
    def reference(self) -> int:
        """Index of the model whose reply the teacher-forced score uses (the merge)."""
        return 0

    @property
    def base(self) -> int:
        """Index of the model whose reply divergence is measured from (base, else the first)."""
        return next((i for i, m in enumerate(self.models) if m.role == "base"), 0)


def _display_name(path: Path, given: str) -> str:
    if looks_remote(given):
        return url_text(given)
    if not Path(os.path.expanduser(given)).exists():  # a Hugging Face id (cached under a hash)
        return given
    return path.name or given


def _hf_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a Hugging Face repo (``name@revision`` too), never online."""
    repo, _, revision = repo_id.partition("@")
    if repo.count("/") != 1 or repo.startswith(("/", ".", "~")):
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        folder = snapshot_download(repo, revision=revision or None, local_files_only=True)
    except (HFValidationError, OSError, ValueError):
        # LocalEntryNotFoundError is an OSError: not downloaded (or not completely).
        return None
    return Path(folder)


def resolve_model(given: str, *, relative_to: Path | None = None) -> Path | None:
    """The local path for a folder, a ``.gguf`` file, a URL or a cached Hugging Face id; None
    when it is none of these here. ``relative_to`` is tried for relative paths after the cwd."""
    if looks_remote(given):
        return parse_target(url_text(given)).path()
    path = Path(os.path.expanduser(given))
    if path.exists():
        return path.resolve()
    if relative_to is not None and not path.is_absolute() and (relative_to / path).exists():
        return (relative_to / path).resolve()
    return _hf_snapshot(given)


def _missing(given: str, what: str) -> BadInputError:
    is_path = given.startswith(("/", ".", "~")) or given.count("/") != 1
    fetch = "check the path" if is_path else f"download it first (hf download {given})"
    return BadInputError(
        f"{what} {given!r} is not on this machine: not a folder, a .gguf file or a model in the "
        "local Hugging Face cache (nothing is downloaded)",
        f"{fetch} or name the models: mergechat compare A B",
    )


def explicit_plan(targets: list[str]) -> ComparePlan:
    """A plan for models named on the command line (2 to `MAX_MODELS`).

    Raises `BadInputError` for too many or too few models and for one that does not exist.
    """
    if len(targets) > MAX_MODELS:
        raise BadInputError(f"compare takes at most {MAX_MODELS} models, got {len(targets)}")
    models = []
    for given in targets:
        path = resolve_model(given)
        if path is None:
            raise _missing(given, "model")
        models.append(CompareModel(_display_name(path, given), "model", path, given))
    return with_tokenizer_notes(ComparePlan(tuple(models)))


def recipe_plan(merged: str, *, allow_missing: bool = False) -> ComparePlan:
    """The merge, its base model and each source, read from ``mergekit_config.yml``.

    A source that is not on this machine raises `BadInputError` naming it, unless
    ``allow_missing``: then its entry carries the error and the others are still compared.
    """
    path = resolve_model(merged)
    if path is None:
        raise _missing(merged, "model")
    if looks_remote(path) or not path.is_dir():
        raise BadInputError(
            f"{merged} is not a merge folder, so it has no recipe to read",
            "name the models to compare: mergechat compare A B [C D]",
        )
    info = read_merge_info(path)
    if info is None or (info.base_model is None and not info.models):
        problem = "has no mergekit_config.yml" if info is None else "names no base or source models"
        raise BadInputError(
            f"{path.name} {problem}",
            "name the models to compare: mergechat compare A B [C D]",
        )
    named: list[tuple[str, Role]] = [(info.base_model, "base")] if info.base_model else []
    named += [(m, "source") for m in info.models if m != info.base_model]
    if len(named) + 1 > MAX_MODELS:
        raise BadInputError(
            f"the recipe names {len(named)} models besides the merge; compare shows at most "
            f"{MAX_MODELS} models",
            "choose them: mergechat compare MERGED BASE SOURCE",
        )
    models = [CompareModel(path.name, "merge", path, merged, notes=info.warnings)]
    for given, role in named:
        found = None if "+" in given else resolve_model(given, relative_to=path.parent)
        if found is None and not allow_missing:
            if "+" in given:
                raise BadInputError(
                    f"the recipe's {role} {given!r} is a LoRA; compare needs a model"
                )
            raise _missing(given, f"the recipe's {role}")
        name = _display_name(found, given) if found is not None else given
        error = None if found is not None else f"{given} is not on this machine"
        models.append(CompareModel(name, role, found or Path(given), given, error=error))
    return with_tokenizer_notes(ComparePlan(tuple(models), from_recipe=True))


def tokenizer_fingerprint(path: Path) -> str | None:
    """A digest of a model folder's vocabulary (None: no tokenizer file to read, or a server).

    Hashes the vocabulary and added tokens rather than the file, since mergekit re-saves the
    tokenizer with another layout but the same tokens.
    """
    if looks_remote(path) or not path.is_dir():
        return None
    digest = hashlib.sha256()
    tokenizer_json = path / "tokenizer.json"
    try:
        if tokenizer_json.is_file():
            data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
            added = sorted((t.get("id"), t.get("content")) for t in data.get("added_tokens", []))
            digest.update(json.dumps([data.get("model", {}).get("vocab"), added]).encode())
            return digest.hexdigest()
        for name in ("tokenizer.model", "vocab.json", "merges.txt", "vocab.txt"):
            if (path / name).is_file():
                digest.update((path / name).read_bytes())
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return digest.hexdigest() if digest.digest() != hashlib.sha256().digest() else None


def same_tokenizer(plan: ComparePlan) -> bool:
    """True when every model's vocabulary is known and equal to the first model's."""
    prints = {tokenizer_fingerprint(m.path) for m in plan.models if m.error is None}
    return len(prints) == 1 and None not in prints


def with_tokenizer_notes(plan: ComparePlan) -> ComparePlan:
    """Add a note to each model whose tokenizer differs from the reference model's."""
    models = list(plan.models)
    reference = tokenizer_fingerprint(models[plan.reference].path)
    if reference is None:
        return plan
    for i, model in enumerate(models):
        if i == plan.reference or model.error is not None:
            continue
        own = tokenizer_fingerprint(model.path)
        if own is not None and own != reference:
            note = (
                f"its tokenizer differs from the {models[plan.reference].role}'s: still "
                "comparable, but replies are compared by word, not by token"
            )
            models[i] = replace(model, notes=(*model.notes, note))
    return replace(plan, models=tuple(models))
