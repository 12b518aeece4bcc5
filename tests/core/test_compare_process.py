"""`CompareRunner` over engine processes: a real tiny merge and its base, each in its own process,
still measured token by token (the relayed streams carry the models' token ids)."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_harness import probe_cache

from mergechat.core.api import EngineClient, EventSink
from mergechat.core.compare.clients import SIDE_BY_SIDE_ENV
from mergechat.core.compare.plan import CompareModel, ComparePlan, recipe_plan
from mergechat.core.compare.runner import CompareRunner
from mergechat.core.engine.process import ProcessEngine
from mergechat.core.settings.generation import GenerationSettings

pytestmark = pytest.mark.slow


def test_divergence_and_agreement_through_engine_processes(
    tiny_merge_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    merge, base, *_ = recipe_plan(str(tiny_merge_dir)).models
    engines: list[ProcessEngine] = []

    def factory(_model: CompareModel, sink: EventSink) -> EngineClient:
        cache = probe_cache(tmp_path_factory)
        engines.append(ProcessEngine(sink, probe_cache=cache, env=SIDE_BY_SIDE_ENV))
        return engines[-1]

    runner = CompareRunner(ComparePlan((merge, base), from_recipe=True), factory, device="cpu")
    try:
        runner.prepare()
        for engine in engines:  # the one-shot's engines wait without spinning on the CPU
            environ = Path(f"/proc/{engine.pid}/environ")
            assert not environ.exists() or b"OMP_WAIT_POLICY=PASSIVE" in environ.read_bytes()
        merged, based = runner.ask("Say hi", GenerationSettings(temperature=0.0, max_new_tokens=6))
        pids = {e.pid for e in engines}
    finally:
        runner.close()
    assert len(engines) == 2 and None not in pids and len(pids) == 2
    assert merged.error is None and based.error is None
    assert based.divergence is None
    assert merged.divergence is not None and merged.divergence.unit == "token"
    assert merged.divergence.length == merged.stats.new_tokens  # type: ignore[union-attr]
    assert merged.agreement == 1.0 and based.agreement is not None
    assert all(e.pid is None for e in engines)  # closed: every process ended
