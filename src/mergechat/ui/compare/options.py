"""`CompareOptions`: what ``mergechat compare`` hands to the compare view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mergechat.core.compare.plan import ComparePlan
from mergechat.core.compare.runner import ClientFactory
from mergechat.core.dtypes import DType
from mergechat.core.settings.generation import GenerationSettings


@dataclass(frozen=True)
class CompareOptions:
    """The plan and the runner's arguments; ``factory`` None: each local model in its own
    engine process, a served one through the remote client (`core.compare.clients`)."""

    plan: ComparePlan
    settings: GenerationSettings
    same_precision: bool = True
    device: str = "auto"
    #: One precision for every local model (None or "auto": the placement decides).
    dtype: DType | Literal["auto"] | None = None
    trust_remote_code: bool = False
    #: False: nothing is saved (``--no-history``); None: the config's ``history.enabled``.
    record_history: bool | None = None
    factory: ClientFactory | None = None
