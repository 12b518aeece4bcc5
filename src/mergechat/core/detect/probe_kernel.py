"""The probe's timed work in the model's shapes: decode steps, a prefill chunk, the LM head.

Each piece is a `Staged` run so a pathologically slow dtype (emulated bfloat16 can be orders of
magnitude slower) can be stopped between stages, its time extrapolated from the work done.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from mergechat.core.detect.probe_shape import ProbeShape
from mergechat.core.dtypes import DType

#: Bytes (in float32) of layer weights the decode probe cycles through, so the weights leave the
#: caches as a real model's do; a model smaller than this is probed whole.
WORKING_SET_BYTES: Final[int] = 128 * 2**20
#: A layer larger than this (in float32) is probed as a slice of its heads and MLP width.
LAYER_CAP_BYTES: Final[int] = 192 * 2**20
#: The LM head probe holds at most this many float32 elements (a slice of the vocabulary).
HEAD_CAP_ELEMENTS: Final[int] = 12 * 2**20
#: Multiply-adds one prefill chunk may cost, which sets the chunk's token count.
PREFILL_MACS: Final[int] = 1_000_000_000
PREFILL_MAX_TOKENS: Final[int] = 512
PREFILL_MIN_TOKENS: Final[int] = 16
#: Positions already in the KV cache when a decode step is timed (a turn's context).
DECODE_CONTEXT: Final[int] = 1024

Stage = Callable[[], Any]


@dataclass(frozen=True)
class Staged:
    """A piece of timed work in stages, each with its share (0..1) of the whole."""

    stages: tuple[tuple[float, Stage], ...]

    def __call__(self) -> Any:
        """Run every stage; returns the last stage's output."""
        out: Any = None
        for _, stage in self.stages:
            out = stage()
        return out


@dataclass(frozen=True)
class Plan:
    """How much of the model one probe holds, and how to scale its times to the whole model."""

    shape: ProbeShape
    #: The (possibly sliced) layer that is built, and how many copies of it.
    layer: ProbeShape
    copies: int
    #: Share of a real layer the built layer holds (1.0 unless the layer was sliced).
    layer_share: float
    prefill_tokens: int
    head_rows: int

    @property
    def head_share(self) -> float:
        """Share of the real LM head the probe's slice holds."""
        return self.head_rows / self.shape.vocab


def plan_for(shape: ProbeShape) -> Plan:
    """Size the probe: copies for the working set, a slice for huge layers, the chunk length."""
    share = min(1.0, LAYER_CAP_BYTES / (4 * shape.layer_params()))
    layer = shape
    if share < 1.0:
        heads = max(1, round(shape.heads * share))
        kv_heads = max(1, min(heads, round(shape.kv_heads * share)))
        intermediate = max(16, round(shape.intermediate * share))
        layer = replace(shape, heads=heads, kv_heads=kv_heads, intermediate=intermediate)
        share = layer.layer_params() / shape.layer_params()
    params = layer.layer_params()
    copies = max(1, min(shape.layers, math.ceil(WORKING_SET_BYTES / (4 * params))))
    tokens = PREFILL_MACS // params
    tokens = max(PREFILL_MIN_TOKENS, min(PREFILL_MAX_TOKENS, tokens // 16 * 16))
    head_rows = max(1, min(shape.vocab, HEAD_CAP_ELEMENTS // shape.hidden))
    return Plan(shape, layer, copies, share, tokens, head_rows)


@dataclass(frozen=True)
class Kernels:
    """The three timed pieces for one dtype on one device."""

    decode: Staged
    prefill: Staged
    head: Staged


class _Layer:
    """One decoder layer's weights in one dtype, with its decode and prefill steps."""

    def __init__(self, torch: Any, weights: dict[str, Any], layer: ProbeShape) -> None:
        self.t, self.w, self.s = torch, weights, layer

    def _norm(self, x: Any, weight: Any) -> Any:
        t = self.t
        return x * t.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight

    def _qkv(self, x: Any) -> tuple[Any, Any, Any]:
        s, f = self.s, self.t.nn.functional
        tokens = x.shape[1]
        h = self._norm(x, self.w["norm1"])
        q = f.linear(h, self.w["q"]).view(1, tokens, s.heads, s.head_dim).transpose(1, 2)
        k = f.linear(h, self.w["k"]).view(1, tokens, s.kv_heads, s.head_dim).transpose(1, 2)
        v = f.linear(h, self.w["v"]).view(1, tokens, s.kv_heads, s.head_dim).transpose(1, 2)
        cos, sin = self.w["cos"], self.w["sin"]
        return q * cos + q.flip(-1) * sin, k * cos + k.flip(-1) * sin, v

    def _attend(self, x: Any, q: Any, k: Any, v: Any, causal: bool) -> Any:
        f = self.t.nn.functional
        gqa = self.s.heads != self.s.kv_heads
        out = f.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
        out = out.transpose(1, 2).reshape(1, x.shape[1], self.s.heads * self.s.head_dim)
        return x + f.linear(out, self.w["o"])

    def _mlp(self, x: Any) -> Any:
        f = self.t.nn.functional
        h = self._norm(x, self.w["norm2"])
        return x + f.linear(
            f.silu(f.linear(h, self.w["gate"])) * f.linear(h, self.w["up"]), self.w["down"]
        )

    def decode(self, x: Any) -> Any:
        """One new token attending to the cached context (appended as transformers' cache does)."""
        q, k, v = self._qkv(x)
        k = self.t.cat((self.w["k_cache"], k), dim=2)
        v = self.t.cat((self.w["v_cache"], v), dim=2)
        return self._mlp(self._attend(x, q, k, v, causal=False))

    def prefill_attention(self, x: Any) -> Any:
        q, k, v = self._qkv(x)
        return self._attend(x, q, k, v, causal=True)

    def prefill_mlp(self, x: Any) -> Any:
        return self._mlp(x)


def _master(torch: Any, plan: Plan, device: str) -> list[dict[str, Any]]:
    """float32 weights for every copy, scaled so activations stay near 1 in every dtype."""
    gen = _generator(torch, device)
    s, shape = plan.layer, plan.shape

    def rand(*dims: int, scale: float = 1.0) -> Any:
        bound = scale * 3**0.5
        on = device if gen.device.type != "cpu" else "cpu"
        out = torch.empty(*dims, device=on).uniform_(-bound, bound, generator=gen)
        return out.to(device)

    attn = s.heads * s.head_dim
    kv = s.kv_heads * s.head_dim
    angle = torch.linspace(0, 1.5, s.head_dim, device=device)
    copies = []
    for _ in range(plan.copies):
        copies.append(
            {
                "q": rand(attn, s.hidden, scale=s.hidden**-0.5),
                "k": rand(kv, s.hidden, scale=s.hidden**-0.5),
                "v": rand(kv, s.hidden, scale=s.hidden**-0.5),
                "o": rand(s.hidden, attn, scale=attn**-0.5),
                "gate": rand(s.intermediate, s.hidden, scale=s.hidden**-0.5),
                "up": rand(s.intermediate, s.hidden, scale=s.hidden**-0.5),
                "down": rand(s.hidden, s.intermediate, scale=s.intermediate**-0.5),
                "norm1": torch.ones(s.hidden, device=device),
                "norm2": torch.ones(s.hidden, device=device),
                "cos": angle.cos(),
                "sin": angle.sin(),
                "k_cache": rand(1, s.kv_heads, DECODE_CONTEXT, s.head_dim),
                "v_cache": rand(1, s.kv_heads, DECODE_CONTEXT, s.head_dim),
            }
        )
    copies[0]["head"] = rand(plan.head_rows, shape.hidden, scale=shape.hidden**-0.5)
    copies[0]["x_decode"] = rand(1, 1, s.hidden)
    copies[0]["x_prefill"] = rand(1, plan.prefill_tokens, s.hidden)
    return copies


def build_master(plan: Plan, device: str) -> list[dict[str, Any]]:
    """The float32 weights every dtype's kernels are cast from (built once per device)."""
    import torch

    with torch.inference_mode():
        return _master(torch, plan, device)


def make_kernels(plan: Plan, master: list[dict[str, Any]], dtype: DType) -> Kernels:
    """Cast ``master`` to ``dtype`` and wrap decode, prefill and LM-head work as `Staged` runs."""
    import torch

    tdtype = getattr(torch, dtype)
    with torch.inference_mode():
        weights = [{k: v.to(tdtype) for k, v in copy.items()} for copy in master]
    layers = [_Layer(torch, w, plan.layer) for w in weights]
    first = weights[0]
    state: dict[str, Any] = {}

    def decode_stage(layer: _Layer, index: int) -> Stage:
        def run() -> Any:
            with torch.inference_mode():
                x = first["x_decode"] if index == 0 else state["decode"]
                state["decode"] = layer.decode(x)
                return state["decode"]

        return run

    def prefill_attention() -> Any:
        with torch.inference_mode():
            state["prefill"] = layers[0].prefill_attention(first["x_prefill"])
            return state["prefill"]

    def prefill_mlp() -> Any:
        with torch.inference_mode():
            return layers[0].prefill_mlp(state["prefill"])

    def head() -> Any:
        with torch.inference_mode():
            return torch.nn.functional.linear(first["x_decode"], first["head"])

    s = plan.layer
    attention_share = (
        (2 * s.heads + 2 * s.kv_heads)
        * s.head_dim
        / ((2 * s.heads + 2 * s.kv_heads) * s.head_dim + 3 * s.intermediate)
    )
    share = 1.0 / len(layers)
    return Kernels(
        decode=Staged(tuple((share, decode_stage(layer, i)) for i, layer in enumerate(layers))),
        prefill=Staged(((attention_share, prefill_attention), (1 - attention_share, prefill_mlp))),
        head=Staged(((1.0, head),)),
    )


def _generator(torch: Any, device: str) -> Any:
    """A seeded generator on ``device`` (on the CPU where the device has none); the global RNG
    is left untouched, so a user's seed still reproduces their replies."""
    try:
        return torch.Generator(device=device).manual_seed(0)
    except Exception:
        return torch.Generator().manual_seed(0)
