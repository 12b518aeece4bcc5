"""`mergechat.core.compare.plan`: which models a comparison shows, and its bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mergechat.core.compare.plan import (
    explicit_plan,
    recipe_plan,
    same_tokenizer,
    tokenizer_fingerprint,
)
from mergechat.core.errors import BadInputError


def _fake_merge(root: Path, yaml_text: str) -> Path:
    merged = root / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    (merged / "mergekit_config.yml").write_text(yaml_text)
    return merged


@pytest.mark.slow
def test_a_merge_brings_its_base_and_sources_in_recipe_order(tiny_merge_dir: Path) -> None:
    plan = recipe_plan(str(tiny_merge_dir))
    roles = [(m.role, m.name) for m in plan.models]
    assert roles == [("merge", "merged"), ("base", "base"), ("source", "a"), ("source", "b")]
    assert all(m.error is None for m in plan.models)
    # mergekit re-saves the base tokenizer: the vocabulary is the same, so no note.
    assert same_tokenizer(plan)
    assert not any("tokenizer" in note for m in plan.models for note in m.notes)


def test_a_missing_recipe_source_is_one_error_naming_it(tmp_path: Path) -> None:
    merged = _fake_merge(
        tmp_path, "merge_method: slerp\nbase_model: /nowhere/base-model\nmodels:\n  - model: x\n"
    )
    with pytest.raises(BadInputError, match="/nowhere/base-model"):
        recipe_plan(str(merged))
    plan = recipe_plan(str(merged), allow_missing=True)
    assert [m.error is not None for m in plan.models] == [False, True, True]
    assert "/nowhere/base-model" in (plan.models[1].error or "")


def test_a_hugging_face_id_is_found_only_in_the_local_cache(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hf

    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for file in tiny_model_dir.iterdir():
        (snapshot / file.name).symlink_to(file)
    (cache / "models--someone--tiny" / "refs").mkdir()
    (cache / "models--someone--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(cache))
    merged = _fake_merge(tmp_path, "merge_method: linear\nmodels:\n  - model: someone/tiny\n")
    plan = recipe_plan(str(merged))
    assert plan.models[1].path == snapshot
    assert plan.models[1].name == "someone/tiny"
    with pytest.raises(BadInputError, match="someone/absent"):
        explicit_plan([str(tiny_model_dir), "someone/absent"])


def test_more_than_four_models_is_bad_input(tiny_model_dir: Path) -> None:
    with pytest.raises(BadInputError, match="at most 4"):
        explicit_plan([str(tiny_model_dir)] * 5)


def test_a_folder_without_a_recipe_asks_for_the_models(tiny_model_dir: Path) -> None:
    with pytest.raises(BadInputError, match=r"mergekit_config\.yml") as caught:
        recipe_plan(str(tiny_model_dir))
    assert "mergechat compare A B" in (caught.value.hint or "")


def test_a_different_tokenizer_is_comparable_with_a_note(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from fixtures.tiny_models import build_tokenizer

    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    build_tokenizer(other, vocab_size=300)
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tiny_model_dir)
    plan = explicit_plan([str(tiny_model_dir), str(other), str(tiny_model_dir)])
    assert not same_tokenizer(plan)
    assert any("tokenizer differs" in n for n in plan.models[1].notes)
    assert plan.models[2].notes == ()
