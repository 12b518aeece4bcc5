"""The recommendation policy on hand-built machines: CPUs, a V100, an A100, small GPUs, no room."""

from __future__ import annotations

from pathlib import Path

import pytest

from mergechat.core.detect.capabilities import Capabilities, DeviceInfo, ProbeResult, Verdict
from mergechat.core.detect.memory_fit import OVERHEAD_BYTES, OVERHEAD_SHARE, needed_bytes
from mergechat.core.detect.policy import assess
from mergechat.core.detect.probe_timing import SLOW_FACTOR
from mergechat.core.dtypes import DTYPES, DType, normalize_dtype
from mergechat.core.errors import DeviceUnavailableError
from mergechat.core.model.info import ModelInfo
from mergechat.core.model.recipe import MergeInfo
from mergechat.core.text import format_bytes

GIB = 1024**3
HALF_ERROR = "\"addmm_impl_cpu_\" not implemented for 'Half'"


def model(
    params: int,
    dtype: DType = "bfloat16",
    *,
    merge: bool = True,
    context: int | None = 8192,
    layers: int | None = 32,
) -> ModelInfo:
    """A Llama-like model (8 KV heads of 128) of ``params`` parameters saved in ``dtype``."""
    return ModelInfo(
        path=Path("/models/m"),
        name="m",
        model_type="llama",
        architectures=("LlamaForCausalLM",),
        declared_dtype=dtype,
        stored_dtypes=(dtype,),
        parameter_count=params,
        weights_format="safetensors",
        weight_files=(Path("/models/m/model.safetensors"),),
        weights_bytes_on_disk=params * 2,
        has_tokenizer=True,
        has_chat_template=True,
        has_generation_config=True,
        context_length=context,
        num_layers=layers,
        num_kv_heads=8,
        head_dim=128,
        merge=MergeInfo("dare_ties", dtype=dtype) if merge else None,
    )


def probes(device: str, **spec: float | str) -> tuple[ProbeResult, ...]:
    """Probe results from turn seconds per dtype (a string is an unsupported error), judged by
    the probe's own slow rule; decode and prompt speed scale alike."""
    timed = {d: s for d, s in spec.items() if isinstance(s, float)}
    fastest = normalize_dtype(min(timed, key=timed.__getitem__))
    assert fastest is not None
    out = []
    for dtype in DTYPES:
        value = spec[dtype]
        if isinstance(value, str):
            out.append(ProbeResult(device, dtype, "unsupported", None, error=value))
            continue
        factor = value / timed[fastest]
        verdict: Verdict = "slow" if factor >= SLOW_FACTOR else "ok"
        out.append(
            ProbeResult(
                device,
                dtype,
                verdict,
                value,
                factor,
                decode_s=value / 200,
                prefill_s=value / 2000,
                decode_factor=factor,
                prefill_factor=factor,
            )
        )
    return tuple(out)


def cpu(
    free_gib: float = 20, flags: tuple[str, ...] = ("avx2", "avx512f", "avx512_bf16")
) -> DeviceInfo:
    return DeviceInfo("cpu", "cpu", "AMD EPYC", 32 * GIB, int(free_gib * GIB), flags, 2, None, True)


def gpu(index: int, name: str, cc: tuple[int, int], free_gib: float) -> DeviceInfo:
    return DeviceInfo(
        f"cuda:{index}",
        "cuda",
        name,
        int(free_gib * GIB) + GIB,
        int(free_gib * GIB),
        (),
        None,
        cc,
        cc >= (8, 0),
    )


# Shaped like the 2-core AVX512-BF16 EPYC: half types make turns faster (seconds per turn).
EPYC = probes("cpu", float32=0.0027, bfloat16=0.0018, float16=0.0014)
# A CPU without AVX512-BF16: half types are emulated, 40x and 30x slower than float32.
OLD_CPU = probes("cpu", float32=0.004, bfloat16=0.160, float16=0.120)
# Old torch on a CPU: float16 matmul raises.
HALF_FAILS = probes("cpu", float32=0.003, bfloat16=0.0018, float16=HALF_ERROR)


def caps(devices: tuple[DeviceInfo, ...], *probe_sets: tuple[ProbeResult, ...]) -> Capabilities:
    return Capabilities(devices, tuple(p for s in probe_sets for p in s), "2.13.0", 0.8)


# --- CPU only ---------------------------------------------------------------------------------


def test_bf16_merge_on_an_avx512_bf16_cpu_stays_bf16_and_mentions_faster_fp16() -> None:
    result = assess(model(135_000_000), caps((cpu(),), EPYC))
    rec = result.recommendation
    assert (rec.device, rec.dtype, rec.device_map) == ("cpu", "bfloat16", None)
    assert rec.reason == "bfloat16: the merge's dtype, runs natively on this CPU (avx512_bf16)"
    assert rec.warnings == (
        "float16 turns measured 1.3x faster but a bfloat16 merge can overflow in float16; "
        "pick it with --dtype float16",
    )
    assert result.verdict("cpu", "float16") is not None
    assert result.verdict("cpu", "float16").text == "ok"  # type: ignore[union-attr]
    assert len(result.verdicts) == 3


def test_bf16_merge_on_a_cpu_without_bf16_goes_float32_never_float16() -> None:
    rec = assess(model(135_000_000), caps((cpu(flags=("avx2",)),), OLD_CPU)).recommendation
    assert rec.dtype == "float32"
    assert rec.reason.startswith("float32: bfloat16 (the merge's dtype) is slow (40.0x)")
    assert all("float16" not in w for w in rec.warnings)  # fp16 is slow too: nothing to offer


def test_half_failure_is_avoided_and_explained() -> None:
    machine = caps((cpu(),), HALF_FAILS)
    result = assess(model(135_000_000, "float16", merge=False), machine)
    assert result.verdict("cpu", "float16").text == f"unsupported: {HALF_ERROR}"  # type: ignore[union-attr]
    rec = result.recommendation
    assert rec.dtype == "bfloat16"  # the fastest dtype with float16's range
    assert "float16 (the model's dtype) is unsupported on this CPU" in rec.reason
    assert "bfloat16 rounds the float16 weights (fewer mantissa bits)" in rec.warnings


def test_explicit_dtype_wins_with_a_warning() -> None:
    machine = caps((cpu(),), HALF_FAILS)
    rec = assess(model(135_000_000), machine, dtype="float16").recommendation
    assert rec.dtype == "float16"
    assert rec.reason == "float16: chosen by the user"
    assert f"float16 on cpu: unsupported: {HALF_ERROR}" in rec.warnings
    assert any("overflow to inf" in w for w in rec.warnings)  # bf16 merge into fp16

    slow = assess(model(135_000_000), caps((cpu(),), OLD_CPU), dtype="bfloat16")
    assert slow.recommendation.dtype == "bfloat16"
    assert "bfloat16 on cpu: slow 40.0x per turn" in slow.recommendation.warnings

    fine = assess(model(135_000_000), caps((cpu(),), EPYC), dtype="float32")
    assert fine.recommendation.warnings == ()


def test_float32_model_runs_as_bfloat16_when_clearly_faster_and_says_so() -> None:
    rec = assess(model(135_000_000, "float32", merge=False), caps((cpu(),), EPYC)).recommendation
    assert rec.dtype == "bfloat16"  # same range as float32, turns predicted 1.5x faster
    assert rec.reason == (
        "bfloat16: turns 1.5x faster than in float32 (the model's dtype) on this CPU, same "
        "range, rounds the weights; --dtype float32 keeps the weights as stored"
    )
    # float16 is fastest but lacks float32's range: pointed out, never chosen.
    assert rec.warnings == (
        "float16 turns measured 1.3x faster but a float32 model can overflow in float16; "
        "pick it with --dtype float16",
    )


def test_float32_model_keeps_float32_when_bfloat16_is_only_a_little_faster() -> None:
    close = probes("cpu", float32=0.0030, bfloat16=0.0025, float16=0.0016)
    rec = assess(model(135_000_000, "float32", merge=False), caps((cpu(),), close)).recommendation
    assert rec.dtype == "float32"
    assert rec.reason == "float32: the model's dtype, measured ok on this CPU"


def test_user_float32_is_kept_even_when_bfloat16_is_faster() -> None:
    result = assess(
        model(135_000_000, "float32", merge=False), caps((cpu(),), EPYC), dtype="float32"
    )
    assert result.recommendation.dtype == "float32"
    assert result.recommendation.reason == "float32: chosen by the user"


def test_does_not_fit_is_a_verdict_with_sizes() -> None:
    big = model(8_000_000_000)  # 16 GB in bf16, 32 GB in fp32
    result = assess(big, caps((cpu(free_gib=20),), EPYC))
    fp32 = result.verdict("cpu", "float32")
    assert fp32 is not None and fp32.verdict == "does not fit"
    assert fp32.fit is not None and fp32.fit.fits is False
    assert (
        fp32.text
        == f"does not fit: {format_bytes(fp32.fit.needed_bytes or 0)} needed, 20.0 GiB free"
    )
    assert result.verdict("cpu", "bfloat16").verdict == "ok"  # type: ignore[union-attr]


def test_memory_need_is_weights_plus_kv_cache_plus_overhead() -> None:
    info = model(1_000_000_000)
    weights = 2_000_000_000
    kv_4096 = 2 * 32 * 8 * 128 * 4096 * 2
    assert needed_bytes(info, "bfloat16", 4096) == (
        weights + kv_4096 + OVERHEAD_BYTES + int(weights * OVERHEAD_SHARE)
    )
    result = assess(info, caps((cpu(),), EPYC))  # context 8192 -> capped at 4096
    fit = result.verdict("cpu", "bfloat16").fit  # type: ignore[union-attr]
    assert fit is not None and fit.needed_bytes == needed_bytes(info, "bfloat16", 4096)
    longer = assess(info, caps((cpu(),), EPYC), context_tokens=32768)
    fit_long = longer.verdict("cpu", "bfloat16").fit  # type: ignore[union-attr]
    assert fit_long is not None and fit_long.needed_bytes == needed_bytes(info, "bfloat16", 32768)
    assert fit_long.needed_bytes > fit.needed_bytes  # type: ignore[operator]


def test_unknown_size_is_said_not_guessed() -> None:
    info = model(1_000)
    from dataclasses import replace

    info = replace(info, parameter_count=None, weights_bytes_on_disk=0)
    result = assess(info, caps((cpu(),), EPYC))
    assert result.verdict("cpu", "bfloat16").fit.fits is None  # type: ignore[union-attr]
    assert result.warnings == ("the model's size is unknown, so memory fit was not checked",)
    assert result.recommendation.dtype == "bfloat16"


# --- GPUs ---------------------------------------------------------------------------------------

A100 = gpu(0, "NVIDIA A100-SXM4-80GB", (8, 0), 78)


def rtx_probes(index: int) -> tuple[ProbeResult, ...]:
    """A consumer GPU ``cuda:index``: the half types twice as fast as float32."""
    return probes(f"cuda:{index}", float32=0.0002, bfloat16=0.0001, float16=0.0001)


A100_PROBES = probes("cuda:0", float32=0.00013, bfloat16=0.00008, float16=0.00008)
V100 = gpu(0, "Tesla V100-SXM2-32GB", (7, 0), 30)
# V100: no native bf16, emulated bf16 measured 6x slower than fp16; fp32 2x (bandwidth).
V100_PROBES = probes("cuda:0", float32=0.00018, bfloat16=0.00060, float16=0.00010)


def test_a100_takes_a_bf16_merge_natively() -> None:
    rec = assess(model(7_000_000_000), caps((cpu(), A100), EPYC, A100_PROBES)).recommendation
    assert (rec.device, rec.dtype, rec.device_map) == ("cuda:0", "bfloat16", None)
    assert rec.reason.startswith(
        "bfloat16: the merge's dtype, runs natively on cuda:0 (NVIDIA A100-SXM4-80GB)"
    )
    assert "first GPU where it runs and fits" in rec.reason


def test_float32_model_on_a_gpu_runs_as_bfloat16() -> None:
    on_a100 = caps((cpu(), A100), EPYC, A100_PROBES)
    rec = assess(model(135_000_000, "float32", merge=False), on_a100).recommendation
    assert (rec.device, rec.dtype) == ("cuda:0", "bfloat16")
    assert rec.reason.startswith("bfloat16: turns 1.6x faster than in float32")


def test_v100_avoids_emulated_bf16_with_float32_and_says_why_not_float16() -> None:
    result = assess(model(3_000_000_000), caps((cpu(), V100), EPYC, V100_PROBES))
    assert result.verdict("cuda:0", "bfloat16").text == "slow 6.0x per turn"  # type: ignore[union-attr]
    rec = result.recommendation
    assert (rec.device, rec.dtype) == ("cuda:0", "float32")
    assert "bfloat16 (the merge's dtype) is slow (6.0x) on cuda:0" in rec.reason
    assert (
        "float16 turns measured 1.8x faster but a bfloat16 merge can overflow in float16; "
        "pick it with --dtype float16"
    ) in rec.warnings


def test_v100_too_small_for_float32_still_never_picks_float16() -> None:
    # 13B: fp32 needs ~57 GB (no room on 30 GB), bf16 ~30 GB (slow). fp16 would fit and be fast.
    result = assess(model(13_000_000_000), caps((cpu(free_gib=120), V100), EPYC, V100_PROBES))
    rec = result.recommendation
    assert rec.dtype != "float16"


def test_first_gpu_with_room_wins() -> None:
    small = gpu(0, "RTX 3060", (8, 6), 10)
    big = gpu(1, "RTX 4090", (8, 9), 22)
    machine = caps((cpu(), small, big), EPYC, rtx_probes(0), rtx_probes(1))
    rec = assess(model(8_000_000_000), machine).recommendation
    assert (rec.device, rec.dtype, rec.device_map) == ("cuda:1", "bfloat16", None)


def test_two_small_gpus_spread_with_device_map_auto() -> None:
    g0, g1 = gpu(0, "RTX 4080", (8, 9), 15), gpu(1, "RTX 4080", (8, 9), 15)
    machine = caps((cpu(free_gib=8), g0, g1), EPYC, rtx_probes(0), rtx_probes(1))
    rec = assess(model(13_000_000_000), machine).recommendation  # ~28 GB in bf16
    assert (rec.device, rec.dtype, rec.device_map) == ("cuda:0", "bfloat16", "auto")
    assert 'device_map="auto" spreads it over cuda:0, cuda:1' in rec.reason
    assert "CPU RAM" not in rec.reason
    assert rec.reason.startswith("bfloat16: the merge's dtype")


def test_one_gpu_plus_cpu_ram_offloads() -> None:
    g0 = gpu(0, "RTX 4060", (8, 9), 7)
    machine = caps((cpu(free_gib=60), g0), EPYC, rtx_probes(0))
    rec = assess(model(13_000_000_000), machine).recommendation
    assert rec.device_map == "auto" and rec.device == "cuda:0"
    assert "spreads it over cuda:0 and CPU RAM" in rec.reason


def test_model_too_big_for_everything_goes_to_cpu_with_a_warning() -> None:
    g0 = gpu(0, "RTX 4090", (8, 9), 22)
    machine = caps((cpu(free_gib=30), g0), EPYC, rtx_probes(0))
    result = assess(model(70_000_000_000), machine)
    assert all(v.verdict == "does not fit" for v in result.verdicts)
    rec = result.recommendation
    assert (rec.device, rec.dtype, rec.device_map) == ("cpu", "bfloat16", None)
    assert "no GPU can take it (cuda:0 bfloat16: does not fit:" in rec.reason
    assert "the model does not fit in the free memory of any device; loading may fail" in (
        rec.warnings
    )


def test_explicit_device_is_validated_and_wins() -> None:
    machine = caps((cpu(), A100), EPYC, A100_PROBES)
    with pytest.raises(DeviceUnavailableError) as err:
        assess(model(1_000_000_000), machine, device="cuda:3")
    assert "cuda:0" in (err.value.hint or "")
    with pytest.raises(DeviceUnavailableError):
        assess(model(1_000_000_000), machine, device="mps")
    rec = assess(model(1_000_000_000), machine, device="cpu").recommendation
    assert (rec.device, rec.dtype) == ("cpu", "bfloat16")
    rec = assess(model(1_000_000_000), machine, device="cuda").recommendation
    assert rec.device == "cuda:0"


def test_explicit_device_without_room_warns() -> None:
    machine = caps((cpu(), V100), EPYC, V100_PROBES)
    rec = assess(model(20_000_000_000), machine, device="cuda:0").recommendation
    assert rec.device == "cuda:0" and rec.device_map is None
    assert any("does not fit" in w for w in rec.warnings)


def test_unprobed_device_is_not_trusted() -> None:
    machine = caps((cpu(), A100), EPYC)  # no probes for the GPU
    result = assess(model(1_000_000_000), machine)
    assert result.verdict("cuda:0", "bfloat16").text == "unsupported: not probed"  # type: ignore[union-attr]
    assert result.recommendation.device == "cpu"


# --- per-turn speeds, busy machines, measured float16 fidelity --------------------------------


def split(
    device: str,
    dtype: DType,
    turn: float,
    factor: float,
    decode: float,
    prompts: float,
    *,
    reliable: bool = True,
) -> ProbeResult:
    """A probe whose decode and prompt speeds differ (factors against the fastest turn)."""
    verdict: Verdict = "slow" if reliable and factor >= SLOW_FACTOR else "ok"
    return ProbeResult(
        device,
        dtype,
        verdict,
        turn,
        factor,
        decode_s=0.1 * decode,
        prefill_s=0.001 * prompts,
        decode_factor=decode,
        prefill_factor=prompts,
        reliable=reliable,
    )


# An AVX2 CPU without native bfloat16: bfloat16 decodes faster but prefills 6.8x slower.
AVX2 = (
    split("cpu", "float32", 25.0, 1.0, 1.0, 1.0),
    split("cpu", "bfloat16", 55.0, 2.2, 0.79, 6.8),
    split("cpu", "float16", 48.0, 1.9, 0.75, 5.3),
)


def test_a_bf16_merge_on_an_avx2_cpu_runs_as_float32_for_faster_turns() -> None:
    result = assess(model(135_000_000), caps((cpu(flags=("avx2",)),), AVX2))
    rec = result.recommendation
    assert rec.dtype == "float32"
    assert "is slow (2.2x)" in rec.reason
    bf16 = result.verdict("cpu", "bfloat16")
    assert bf16 is not None and bf16.text == "slow 2.2x per turn"
    assert bf16.speed == "decode 1.3x faster, prompts 6.8x slower (vs float32)"
    fp32 = result.verdict("cpu", "float32")
    assert fp32 is not None and fp32.speed == "fastest per turn"


def test_an_exact_cast_is_taken_when_turns_are_a_little_faster() -> None:
    # bfloat16 is ok (1.2x) but float32 holds every bfloat16 value and makes turns faster.
    mild = (
        split("cpu", "float32", 10.0, 1.0, 1.0, 1.0),
        split("cpu", "bfloat16", 12.0, 1.2, 0.9, 1.6),
        split("cpu", "float16", 30.0, 3.0, 0.9, 9.0),
    )
    rec = assess(model(135_000_000), caps((cpu(flags=("avx2",)),), mild)).recommendation
    assert rec.dtype == "float32"
    assert rec.reason.startswith("float32: turns 1.2x faster than in bfloat16")
    assert "rounds" not in rec.reason  # bfloat16 -> float32 is exact


def test_a_busy_machine_never_moves_a_model_from_its_own_precision() -> None:
    busy = tuple(
        split(
            p.device,
            p.dtype,
            p.seconds or 0.0,
            p.factor or 1.0,
            p.decode_factor or 1.0,
            p.prefill_factor or 1.0,
            reliable=False,
        )
        for p in AVX2
    )
    result = assess(model(135_000_000), caps((cpu(flags=("avx2",)),), busy))
    rec = result.recommendation
    assert rec.dtype == "bfloat16"
    assert "not measured reliably: machine busy" in rec.reason
    assert rec.warnings == ()  # no "faster" note from a disturbed measurement
    assert all(v.verdict == "ok" for v in result.verdicts)
    texts = {v.dtype: v.text for v in result.verdicts}
    assert texts["float16"] == "ok (not measured reliably: machine busy)"


def test_float16_measured_safe_is_an_option_without_the_overflow_warning() -> None:
    info = model(135_000_000)
    unsafe = assess(info, caps((cpu(),), EPYC), dtype="float16", float16_safe=False)
    assert any("overflow" in w for w in unsafe.recommendation.warnings)
    assert "float16" not in unsafe.safe_dtypes
    safe = assess(info, caps((cpu(),), EPYC), dtype="float16", float16_safe=True)
    assert not any("overflow" in w for w in safe.recommendation.warnings)
    assert "float16" in safe.safe_dtypes
    fast = (
        split("cpu", "float32", 30.0, 3.0, 3.0, 3.0),
        split("cpu", "bfloat16", 15.0, 1.5, 1.5, 1.5),
        split("cpu", "float16", 10.0, 1.0, 1.0, 1.0),
    )
    auto = assess(info, caps((cpu(),), fast), float16_safe=True).recommendation
    assert auto.dtype == "float16"
    assert "measured to fit float16" in auto.reason
    never = assess(info, caps((cpu(),), fast), float16_safe=False).recommendation
    assert never.dtype != "float16"
