"""The shapes the detector probes with: the model's own layer sizes, or a generic decoder layer.

A probe only predicts a model's speed when it runs that model's matrix shapes: a 1024-wide layer
ranks dtypes differently from a 2048-wide one on the same CPU.
"""

from __future__ import annotations

import hashlib
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # only a type here: the UI imports this module before first paint
    from mergechat.core.model.info import ModelInfo

#: Tokens of a typical chat turn: the context it prefills and the reply it decodes.
TURN_PROMPT_TOKENS: Final[int] = 1000
TURN_NEW_TOKENS: Final[int] = 200


@dataclass(frozen=True)
class ProbeShape:
    """One decoder layer's sizes, the layer count and the vocabulary (for the LM head)."""

    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    layers: int
    #: True when these are the model's own sizes, False for the generic layer.
    from_model: bool = True

    def key(self) -> str:
        """A short stable key for the probe cache."""
        return hashlib.sha256(repr(astuple(self)).encode()).hexdigest()[:16]

    def describe(self) -> str:
        """``24 layers of 2048 x 8192, 32/8 heads, vocabulary 49152``."""
        return (
            f"{self.layers} layers of {self.hidden} x {self.intermediate}, "
            f"{self.heads}/{self.kv_heads} heads, vocabulary {self.vocab}"
        )

    def layer_params(self) -> int:
        """Weights of one layer (attention projections and the gated MLP)."""
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return attention + 3 * self.hidden * self.intermediate


#: A Llama-like layer used when no model is given (the app before a load, `doctor` alone).
GENERIC: Final[ProbeShape] = ProbeShape(
    hidden=1024,
    intermediate=2816,
    heads=16,
    kv_heads=16,
    head_dim=64,
    vocab=32000,
    layers=24,
    from_model=False,
)


def shape_for(info: ModelInfo | None) -> ProbeShape:
    """The model's own shape when its config names it, else `GENERIC`."""
    if info is None or not info.hidden_size or not info.num_layers:
        return GENERIC
    hidden = info.hidden_size
    heads = info.num_heads or max(1, hidden // 64)
    head_dim = info.head_dim or max(1, hidden // heads)
    return ProbeShape(
        hidden=hidden,
        intermediate=info.intermediate_size or _default_intermediate(hidden),
        heads=heads,
        kv_heads=info.num_kv_heads or heads,
        head_dim=head_dim,
        vocab=info.vocab_size or GENERIC.vocab,
        layers=info.num_layers,
    )


def _default_intermediate(hidden: int) -> int:
    """Llama's rule when a config leaves the MLP width out: 8/3 of hidden, a multiple of 256."""
    return -(-(hidden * 8 // 3) // 256) * 256
