"""`CompareOptions`: what ``mergechat compare`` hands to the compare view, and the engine each
model gets (the app's own engine process for a local model, the remote client for a URL)."""

from __future__ import annotations

from dataclasses import dataclass

from mergechat.core.api import EngineClient, EventSink
from mergechat.core.compare.plan import CompareModel, ComparePlan
from mergechat.core.compare.runner import ClientFactory
from mergechat.core.dtypes import DType
from mergechat.core.settings.generation import GenerationSettings
from mergechat.ui.runtime import real_engine


@dataclass(frozen=True)
class CompareOptions:
    """The plan and the runner's arguments; ``factory`` None: `default_factory`."""

    plan: ComparePlan
    settings: GenerationSettings
    same_precision: bool = True
    device: str = "auto"
    dtype: DType | None = None
    trust_remote_code: bool = False
    #: False: nothing is saved (``--no-history``); None: the config's ``history.enabled``.
    record_history: bool | None = None
    factory: ClientFactory | None = None


def default_factory(model: CompareModel, sink: EventSink) -> EngineClient:
    """A local model in its own engine process (torch never shares the UI's GIL), a served
    model through the remote client."""
    if model.remote:
        from mergechat.core.remote.client import RemoteClient

        return RemoteClient(sink)
    return real_engine(sink)
