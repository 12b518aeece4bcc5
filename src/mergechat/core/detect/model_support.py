"""Whether the installed transformers can build a model: inspection plus its architecture check.

Here (detection of what this install runs) because the model layer below never imports
transformers; doctor, serve, the model check screen and the engine inspect through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mergechat.core.model import inspection
from mergechat.core.model.info import ModelInfo, ModelProblem
from mergechat.core.model.pickle_scan import PickleCheck, unsafe_pickle_globals


def inspect_model(
    path: str | Path, *, strict: bool = False, pickle_check: PickleCheck = unsafe_pickle_globals
) -> ModelInfo:
    """`inspection.inspect_model` with `architecture_problem` among the problems it finds."""
    return inspection.inspect_model(
        path, strict=strict, pickle_check=pickle_check, architecture_check=architecture_problem
    )


def architecture_problem(model_type: str | None, archs: list[Any]) -> ModelProblem | None:
    """The problem when transformers cannot build a causal LM for config.json's model_type.

    The loader uses ``AutoModelForCausalLM``, which picks its class from ``model_type`` alone
    (``architectures`` is informative), so its mapping decides.
    """
    try:
        import transformers
        from transformers.models.auto.configuration_auto import (  # type: ignore[attr-defined]
            CONFIG_MAPPING_NAMES,
        )
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except Exception:  # pragma: no cover - a broken install is reported at load
        return None
    named = ", ".join(a for a in archs if isinstance(a, str))
    named = f" (architectures: {named})" if named else ""
    version = f"transformers {transformers.__version__}"
    if model_type is None:
        return ModelProblem(
            f"config.json has no model_type{named}, so {version} cannot tell which "
            "architecture to build",
            hint='add the base model\'s "model_type" to config.json (for example "llama")',
        )
    if model_type not in CONFIG_MAPPING_NAMES:
        return ModelProblem(
            f"unknown model_type {model_type!r}{named}: {version} does not know this architecture",
            hint="upgrade transformers, or fix model_type in config.json (copy it from the "
            "base model)",
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return ModelProblem(
            f"model_type {model_type!r}{named} is not a text-generation model: {version} has "
            "no causal language model class for it",
            hint="mergechat chats with causal language models (llama, mistral, qwen2, ...)",
        )
    return None
