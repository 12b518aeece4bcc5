"""`Session`: what the app knows about its engine and model right now, in one plain object.

The app owns it; the engine-event router and the precision switcher write it, and the screens
read it ("may I send?", the loaded model, the detector's results) instead of widgets or the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mergechat.core.api import CapabilitiesReady, LoadRequest, ModelState
from mergechat.core.dtypes import DType

Phase = Literal["starting", "no model", "loading", "ready", "generating", "switching", "error"]

#: Why a prompt cannot be sent in each non-ready phase (the text stays in the input).
_NOT_READY: dict[Phase, str] = {
    "starting": "The model is still loading; your text stays in the input.",
    "loading": "The model is still loading; your text stays in the input.",
    "switching": "Precision is being switched; send again in a moment.",
    "generating": "A reply is streaming; press Esc to stop it first.",
    "no model": "No model is loaded: press F2 to choose one.",
    "error": "No model is loaded: press F2 to choose one.",
}


@dataclass
class Session:
    """The phase, the model, the detector's results and the queued switch of this run."""

    phase: Phase = "starting"
    #: The model loaded now (None: none, or the engine let it go).
    model_state: ModelState | None = None
    #: The detector's latest results (devices, probes, the model's assessment).
    capabilities: CapabilitiesReady | None = None
    #: The load sent last, and the one that loaded the model in `model_state`.
    pending_request: LoadRequest | None = None
    loaded_request: LoadRequest | None = None
    #: The load in flight brings back a model a failed load released (tried once).
    restoring: bool = False
    #: The precision to switch to when the streaming reply ends (None: nothing queued).
    queued_dtype: DType | None = None

    @property
    def ready(self) -> bool:
        """A prompt may be sent (and a switch, regenerate or continue may start) now."""
        return self.phase == "ready"

    def not_ready_text(self) -> str:
        """Why nothing can be sent now, as the notice says it."""
        return _NOT_READY.get(self.phase, "Not ready.")
