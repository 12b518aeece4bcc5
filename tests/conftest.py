"""Shared fixtures: offline Hugging Face, isolated user dirs, tiny real models built once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Nothing in the tests may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point config, cache and data dirs at a fresh temp folder for every test."""
    root = tmp_path_factory.mktemp("userdirs")
    saved = {k: os.environ.get(k) for k in _USER_DIR_VARS}
    os.environ["MERGECHAT_CONFIG_DIR"] = str(root / "config")
    os.environ["MERGECHAT_CACHE_DIR"] = str(_shared_cache(tmp_path_factory))
    os.environ["MERGECHAT_DATA_DIR"] = str(root / "data")
    os.environ.pop("MERGECHAT_CONFIG", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


_USER_DIR_VARS = (
    "MERGECHAT_CONFIG_DIR",
    "MERGECHAT_CACHE_DIR",
    "MERGECHAT_DATA_DIR",
    "MERGECHAT_CONFIG",
)
_CACHE: list[Path] = []


def _shared_cache(factory: pytest.TempPathFactory) -> Path:
    # One cache for the session so the capability probe runs once, not once per test.
    if not _CACHE:
        _CACHE.append(factory.mktemp("cache"))
    return _CACHE[0]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama saved as bfloat16 with a tokenizer and a chat template."""
    from fixtures.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def tiny_merge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real mergekit dare_ties merge of tiny Llamas, declared bfloat16."""
    from fixtures.tiny_models import build_dare_ties_merge

    return build_dare_ties_merge(tmp_path_factory.mktemp("merge"))


@pytest.fixture(scope="session")
def tiny_gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Q8_0 llama GGUF with a chat template, alone in a folder (tests only read it)."""
    from fixtures.tiny_gguf import build_tiny_gguf

    return build_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-q8.gguf")


@pytest.fixture(scope="session")
def served_tiny_model(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[object]:
    """A real ``transformers serve`` of `tiny_model_dir` on 127.0.0.1 (remote backend tests)."""
    from fixtures.transformers_server import transformers_server

    with transformers_server(tiny_model_dir, tmp_path_factory.mktemp("serve") / "log") as served:
        yield served
