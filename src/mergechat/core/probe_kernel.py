"""The probe's timed kernel: one decode step of a Llama-like layer in a given dtype and device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from mergechat.core.dtypes import DType

#: Shape of the timed kernel: one Llama-like decoder layer at batch 1, one new token, attending to
#: `PROBE_CONTEXT` cached positions. Batch-1 decode is matrix-vector work; a multi-token activation
#: (8 rows) ranks float16 *below* float32 on this AVX512-BF16 CPU, the opposite of real decode.
PROBE_HIDDEN: Final[int] = 1024
PROBE_INTERMEDIATE: Final[int] = 2816
PROBE_CONTEXT: Final[int] = 256
#: The support check before timing: same structure, tiny, cheap even on an emulated path.
CHECK_HIDDEN: Final[int] = 64
CHECK_INTERMEDIATE: Final[int] = 128
CHECK_CONTEXT: Final[int] = 8

#: One stage of a probe kernel: takes the previous stage's state, returns the next.
Stage = Callable[[Any], Any]


@dataclass(frozen=True)
class ProbeKernel:
    """One decode step split in stages, each with its share of the multiply-adds."""

    stages: tuple[tuple[float, Stage], ...]

    def __call__(self) -> Any:
        """Run every stage; returns the output tensor."""
        state: Any = None
        for _, stage in self.stages:
            state = stage(state)
        return state


def make_probe_kernel(
    device: str, dtype: DType, *, hidden: int, intermediate: int, context: int
) -> ProbeKernel:
    """Build a decode step (attention over a KV cache, then a gated MLP) in ``dtype`` on ``device``.

    Weights are random with a 1/sqrt(fan_in) scale so activations stay near 1 in every dtype; the
    kernel returns its output so the caller can check it is finite.
    """
    import torch

    tdtype = getattr(torch, dtype)
    gen = _generator(torch, device)

    def rand(*shape: int, scale: float = 1.0) -> Any:
        # Uniform with the variance of N(0, scale^2); drawn in float32 so an unsupported dtype
        # fails in the matmul (the real error), not in the random fill.
        bound = scale * 3**0.5
        on = device if gen.device.type != "cpu" else "cpu"
        host = torch.empty(*shape, device=on).uniform_(-bound, bound, generator=gen)
        return host.to(device=device, dtype=tdtype)

    # skip_init: Linear's own init would draw from (and advance) the global RNG.
    skip_init: Any = torch.nn.utils.skip_init
    q_proj = skip_init(torch.nn.Linear, hidden, hidden, bias=True, device=device, dtype=tdtype)
    with torch.no_grad():
        q_proj.weight.copy_(rand(hidden, hidden, scale=hidden**-0.5))
        q_proj.bias.zero_()
    o_w = rand(hidden, hidden, scale=hidden**-0.5)
    gate_w = rand(intermediate, hidden, scale=hidden**-0.5)
    up_w = rand(intermediate, hidden, scale=hidden**-0.5)
    down_w = rand(hidden, intermediate, scale=intermediate**-0.5)
    keys, values, x = rand(1, context, hidden), rand(1, context, hidden), rand(1, 1, hidden)
    linear, silu = torch.nn.functional.linear, torch.nn.functional.silu
    scale = hidden**-0.5

    def attention(_: Any) -> Any:
        with torch.inference_mode():
            weights = torch.softmax((q_proj(x) @ keys.transpose(1, 2)) * scale, dim=-1)
            return x + linear(weights @ values, o_w)

    def gated(h: Any) -> Any:
        with torch.inference_mode():
            return h, silu(linear(h, gate_w)) * linear(h, up_w)

    def down(state: Any) -> Any:
        with torch.inference_mode():
            h, g = state
            return h + linear(g, down_w)

    attention_work = 2 * hidden * hidden + 2 * context * hidden
    work = (attention_work, 2 * intermediate * hidden, intermediate * hidden)
    shares = (w / sum(work) for w in work)
    return ProbeKernel(tuple(zip(shares, (attention, gated, down), strict=True)))


def _generator(torch: Any, device: str) -> Any:
    """A seeded generator on ``device`` (on the CPU where the device has none); the global RNG
    is left untouched, so a user's seed still reproduces their replies."""
    try:
        return torch.Generator(device=device).manual_seed(0)
    except Exception:
        return torch.Generator().manual_seed(0)
