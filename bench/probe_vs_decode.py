"""Check that the capability probe ranks float32/bfloat16/float16 like real greedy decode does.

Builds a random LlamaForCausalLM shaped like SmolLM2-135M, measures greedy decode tokens/s (and
prompt prefill tokens/s) per dtype, interleaving the dtypes over several rounds, runs the probe
on the CPU a few times, and prints both rankings (best of the rounds, the figure least disturbed
by other programs). Exit status 1 when the rankings disagree.

Runs whose CPU meter shows other programs busy (more than --quiet-cores) are kept apart: on a
shared 2-core machine they slow half-precision kernels by 5-800x. It keeps measuring, up to
--max-minutes, until every dtype has enough quiet runs.

Usage: python bench/probe_vs_decode.py [--rounds 3] [--probes 3] [--max-minutes 10]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation.streamers import BaseStreamer

from mergechat.core.devices import CpuMeter, detect_devices
from mergechat.core.dtypes import DTYPES, DType
from mergechat.core.probe import probe_device

SMOLLM2_135M: dict[str, Any] = {
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}


def build_models() -> dict[DType, Any]:
    """One random SmolLM2-135M-shaped model per dtype (same weights, cast)."""
    torch.manual_seed(0)
    base: Any = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    base.eval()
    return {d: copy.deepcopy(base).to(getattr(torch, d)) for d in DTYPES}


class TokenClock(BaseStreamer):
    """A streamer that only notes when each new token arrives."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def decode_rate(model: Any, prompt: Any, new_tokens: int) -> tuple[float, float]:
    """(decode tokens/s from the first to the last new token, prefill tokens/s) of one greedy
    generation, timed inside ``generate`` by a streamer."""
    clock = TokenClock()
    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(
            prompt,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            streamer=clock,
        )
    first, last = clock.times[1], clock.times[-1]  # times[0]: the prompt being pushed
    return (len(clock.times) - 2) / (last - first), prompt.shape[1] / (first - start)


def ranking(speed: dict[DType, float]) -> list[DType]:
    """Dtypes from fastest to slowest."""
    return sorted(speed, key=speed.__getitem__, reverse=True)


@dataclass
class Samples:
    """Measurements per dtype, split by whether other programs were busy meanwhile."""

    quiet: dict[DType, list[float]] = field(default_factory=lambda: {d: [] for d in DTYPES})
    busy: dict[DType, list[float]] = field(default_factory=lambda: {d: [] for d in DTYPES})

    def add(self, dtype: DType, value: float, others: float | None, limit: float) -> None:
        (self.quiet if others is not None and others <= limit else self.busy)[dtype].append(value)

    def best(self) -> dict[DType, float]:
        """Best quiet value per dtype; the best disturbed one where no quiet run exists."""
        return {
            d: max(self.quiet[d] or self.busy[d]) for d in DTYPES if self.quiet[d] or self.busy[d]
        }

    def enough(self, wanted: int) -> bool:
        return all(len(v) >= wanted for v in self.quiet.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="quiet decode runs per dtype")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--probes", type=int, default=3, help="quiet probe runs")
    parser.add_argument("--quiet-cores", type=float, default=0.2, help="max CPU use of others")
    parser.add_argument("--max-minutes", type=float, default=10.0)
    args = parser.parse_args()
    deadline = time.monotonic() + 60 * args.max_minutes / 2  # half for probes, half for decode

    cpu = detect_devices()[0]
    print(f"torch {torch.__version__}, {cpu.name}, {cpu.cores} cores, flags {cpu.features}")
    probe_runs = Samples()
    run = 0
    while not probe_runs.enough(args.probes) and (run < args.probes or time.monotonic() < deadline):
        run += 1
        meter = CpuMeter()
        results = probe_device(cpu)
        wall, others = meter.stop()
        row = "  ".join(
            f"{p.dtype} {p.verdict} {p.seconds * 1e3:.2f} ms x{p.factor:.2f}"
            if p.seconds is not None and p.factor is not None
            else f"{p.dtype} {p.verdict} {p.error}"
            for p in results
        )
        busy = f"{others:.2f}" if others is not None else "?"
        print(f"probe {run}: {wall:.2f} s total, other programs {busy} cores | {row}")
        for p in results:
            if p.seconds:
                probe_runs.add(p.dtype, 1.0 / p.seconds, others, args.quiet_cores)

    models = build_models()
    prompt = torch.randint(0, SMOLLM2_135M["vocab_size"], (1, args.prompt_tokens))
    for model in models.values():  # warm-up: first calls pay one-off costs
        decode_rate(model, prompt[:, :8], 4)
    decode, prefill = Samples(), Samples()
    deadline = time.monotonic() + 60 * args.max_minutes / 2
    rounds = 0
    while not decode.enough(args.rounds) and (rounds < args.rounds or time.monotonic() < deadline):
        rounds += 1
        for dtype, model in models.items():  # interleaved: drift hits every dtype alike
            meter = CpuMeter()
            rate, pre = decode_rate(model, prompt, args.new_tokens)
            _, others = meter.stop()
            decode.add(dtype, rate, others, args.quiet_cores)
            prefill.add(dtype, pre, others, args.quiet_cores)
    counts = ", ".join(f"{d} {len(decode.quiet[d])}" for d in DTYPES)
    quiet = f"others <= {args.quiet_cores} cores"
    print(f"decode: {rounds} interleaved rounds; quiet runs ({quiet}): {counts}")

    print(f"\n{'dtype':<10}{'probe it/s':>12}{'decode tok/s':>14}{'prefill tok/s':>15}")
    probe_best, decode_best, prefill_best = probe_runs.best(), decode.best(), prefill.best()
    for d in DTYPES:
        pr = f"{probe_best[d]:.0f}" if d in probe_best else "-"
        print(f"{d:<10}{pr:>12}{decode_best[d]:>14.1f}{prefill_best[d]:>15.0f}")
    probe_rank, decode_rank = ranking(probe_best), ranking(decode_best)
    print(f"\nprobe ranking:  {' > '.join(probe_rank)}")
    print(f"decode ranking: {' > '.join(decode_rank)}")
    agree = probe_rank == decode_rank
    print("rankings agree" if agree else "RANKINGS DISAGREE")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
