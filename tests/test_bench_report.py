"""bench/report.py and bench/run_all.py on synthetic results and fake scripts: no benchmark runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import plots as plotting  # type: ignore[import-not-found]
import report  # type: ignore[import-not-found]
import run_all  # type: ignore[import-not-found]

CPU = {"cpu": "Test CPU", "cores": 2, "gpus": [], "torch": "2.13.0+cpu", "transformers": "5.24.0"}
PNG = b"\x89PNG\r\n\x1a\n"


def row(metric: str, value: float, unit: str, **fields: Any) -> dict[str, Any]:
    base = {"model": "", "dtype": "", "mode": "", "baseline": None, "target": "", "met": None}
    return {"metric": metric, "value": value, "unit": unit, "note": "", **base, **fields}


def result(folder: Path, name: str, stamp: str, rows: list[dict[str, Any]], **extra: Any) -> Path:
    data = {"benchmark": name, "machine": CPU, "load_average": [0.5, 0.5, 0.5], "summary": rows}
    path = folder / f"{name}-{stamp}.json"
    path.write_text(json.dumps({**data, **extra}))
    return path


DECODE_ROWS = [
    row("decode ratio", 1.02, "x", model="demo", dtype="float32", mode="one-shot",
        target=">= 0.97", met=True),
    row("decode ratio", 0.91, "x", model="demo", dtype="float16", mode="app", target=">= 0.97",
        met=False, note="the app redraws per token"),
    row("decode", 13.2, "tok/s", model="demo", dtype="float32", mode="one-shot", baseline=12.0),
]  # fmt: skip
TOK_S = {
    "series": {"mergechat": [["float32", 13.2], ["bfloat16", 18]], "bare": {"float32": 12}},
    "logy": True,
}


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Path]:
    folders = {"results": tmp_path / "results", "plots": tmp_path / "plots"}
    folders["results"].mkdir()
    return {**folders, "out": tmp_path / "BENCHMARKS.md"}


def generate(paths: dict[str, Path], run_file: Path | None = None) -> str:
    return str(report.generate(paths["results"], paths["out"], paths["plots"], run_file))


def test_tables_missed_targets_and_not_run(paths: dict[str, Path]) -> None:
    result(paths["results"], "decode_throughput", "20260101-120000", DECODE_ROWS)
    text = generate(paths)
    assert text == paths["out"].read_text()
    assert "| decode ratio | demo | float16 | app | 0.91x | — | 0.91x | >= 0.97 | ✗ |" in text
    assert "| decode | demo | float32 | one-shot | 13.2 tok/s | 12 tok/s | 1.1x |  |  |  |" in text
    assert "| 1-2 | Decode throughput and time to first token | CPU |" in text
    assert "| 1/2 | ✗ 1 missed |" in text
    missed = text.split("## Targets missed")[1].split("##")[0]
    assert "decode ratio (demo, float16, app) = 0.91x, target >= 0.97" in missed
    assert "the app redraws per token" in missed
    assert "float32" not in missed
    for title in ("First paint", "Precision switch", "Detector", "Memory", "Scaling"):
        assert f"| {title} | — | — | — | not run |" in text
    assert "Not run: no result yet. Run `python bench/run_all.py --only memory`." in text
    assert "CPU Test CPU (2 cores); GPU: none; torch 2.13.0+cpu" in text
    assert "python bench/run_all.py" in text.split("## Rerunning")[1]


def test_newest_result_wins_and_older_formats_are_skipped(paths: dict[str, Path]) -> None:
    rows = [row("first paint", 0.5, "s", target="< 0.3 s", met=False)]
    result(paths["results"], "first_paint", "20260101-100000", rows)
    result(paths["results"], "first_paint", "20260102-100000", [row("first paint", 0.2, "s")])
    (paths["results"] / "first_paint-20260103-100000.json").write_text('{"results": []}')
    text = generate(paths)
    assert "`first_paint-20260102-100000.json`" in text
    assert "0.2 s" in text
    assert "0.5 s" not in text
    assert "None: every target with a figure in these results was met." in text


def test_analysis_block_is_kept(paths: dict[str, Path]) -> None:
    text = generate(paths)
    assert "<!-- analysis -->\n_Causes of missed targets" in text
    hand = "\nfloat16 is slow here: no AVX512-FP16 on this CPU.\n"
    paths["out"].write_text(text.replace(report.kept_analysis(text), hand))
    result(paths["results"], "memory", "20260101-120000", [row("peak RSS", 900, "MiB")])
    again = generate(paths)
    assert f"<!-- analysis -->{hand}<!-- /analysis -->" in again
    assert "| peak RSS |" in again
    assert again.count("<!-- analysis -->") == 1


def test_plots_are_drawn_linked_and_stale_ones_removed(paths: dict[str, Path]) -> None:
    runs = {"streaming": [{"x": 50, "y": 9.0}, {"x": 95, "y": 31.0}], "idle": [[50, 5], [95, 9]]}
    latency = {"series": runs, "target": 50, "ylabel": "ms"}
    plots = {"tok/s by dtype": TOK_S, "latency percentiles": latency, "empty": []}
    result(paths["results"], "decode_throughput", "20260101-120000", DECODE_ROWS, plots=plots)
    result(
        paths["results"], "memory", "20260101-120000", [row("peak RSS", 900, "MiB", baseline=850)]
    )
    paths["plots"].mkdir()
    (paths["plots"] / "old.png").write_bytes(PNG)
    text = generate(paths)
    names = sorted(p.name for p in paths["plots"].iterdir())
    assert names == [
        "decode_throughput-latency-percentiles.png",
        "decode_throughput-tok-s-by-dtype.png",
        "memory-mib.png",  # no plots in the result: mergechat vs baseline from its rows
    ]
    for name in names:
        assert (paths["plots"] / name).read_bytes().startswith(PNG)
        assert f"(plots/{name})" in text


def test_gpu_result_is_labelled_beside_the_cpu_one(paths: dict[str, Path]) -> None:
    result(paths["results"], "switch", "20260101-120000", [row("cast", 0.05, "x", met=True)])
    gpu = {**CPU, "gpus": ["NVIDIA H100 80GB HBM3"]}
    rows = [row("cast", 0.2, "x", target="<= 0.1x", met=False, dtype="float16")]
    result(paths["results"], "switch", "20260101-130000", rows, machine=gpu, plots={"s": TOK_S})
    text = generate(paths)
    assert "| 5 | Precision switch | CPU |" in text
    assert "| 5 | Precision switch | NVIDIA H100 80GB HBM3 |" in text
    assert "### 5. Precision switch — NVIDIA H100 80GB HBM3" in text
    assert "**Precision switch** on NVIDIA H100 80GB HBM3: cast (float16) = 0.2x" in text
    assert "GPU: NVIDIA H100 80GB HBM3;" in text
    assert (paths["plots"] / "switch-nvidia-h100-80gb-hbm3-s.png").exists()


def test_busy_machine_and_settings_are_shown(paths: dict[str, Path]) -> None:
    rows = [row("p95", 30, "ms")]
    settings = {"keys": 50, "quick": True, "model": None}
    load = [5.2, 4, 3]
    result(
        paths["results"],
        "input_latency",
        "20260101-120000",
        rows,
        load_average=load,
        settings=settings,
    )
    text = generate(paths)
    assert "· quick run · settings: keys=50 ·" in text
    assert "load 5.20 / 4.00 / 3.00 (1/5/15 min) on 2 cores · ⚠ busy machine" in text
    assert "> ⚠ The load average was above the core count in 1 of 1 runs" in text


def test_series_shapes() -> None:
    assert plotting.series_of([[1, 2], {"x": 3, "y": 4}, [5, None]]) == (
        {"": [(1, 2.0), (3, 4.0)]},
        {},
    )
    series, meta = plotting.series_of({"series": {"a": {"p50": 1}}, "ylabel": "ms"})
    assert series == {"a": [("p50", 1.0)]} and meta == {"ylabel": "ms"}
    assert plotting.series_of({"float32": 3, "bfloat16": 4.5}) == (
        {"": [("float32", 3.0), ("bfloat16", 4.5)]},
        {},
    )
    assert plotting.series_of("nonsense") == ({}, {})


def test_number_formatting() -> None:
    assert [report.number(v) for v in (0.0123, 0.95, 13.24, 1234.5, None)] == [
        "0.0123", "0.95", "13.2", "1,234", "—",
    ]  # fmt: skip
    assert report.ratio(row("m", 2.0, "s", baseline=4.0)) == 0.5
    assert report.ratio(row("m", 0.9, "x")) == 0.9
    assert report.ratio(row("m", 2.0, "s")) is None


FAKE_OK = """import json, sys, time
from pathlib import Path
assert sys.argv[1:] == {args!r}, sys.argv
print("working")
row = {{"metric": "m", "value": 1.0, "unit": "x", "target": ">= 1", "met": True}}
data = {{"benchmark": "{name}", "machine": {{"cores": 2}}, "summary": [row]}}
Path({results!r}, "{name}-" + time.strftime("%Y%m%d-%H%M%S") + ".json").write_text(json.dumps(data))
"""


def test_run_all_records_each_script_and_keeps_going(paths: dict[str, Path]) -> None:
    scripts, results = paths["out"].parent / "scripts", paths["results"]
    scripts.mkdir()
    rows = [row("first paint", 0.2, "s", target="< 0.3 s", met=True)]
    old = result(results, "first_paint", "20000101-000000", rows)
    args = ["--quick", "--models", "demo"]
    ok = FAKE_OK.format(name="decode_throughput", results=str(results), args=args)
    (scripts / "decode_throughput.py").write_text(ok + '# takes "--models"\n')
    (scripts / "first_paint.py").write_text("print('boom')\nraise SystemExit(3)\n")
    quiet = FAKE_OK.format(name="switch", results=str(results), args=["--quick"])
    (scripts / "switch.py").write_text(quiet)
    (scripts / "hang.py").write_text("import time\ntime.sleep(60)\n")
    names = ["decode_throughput", "first_paint", "memory", "switch"]
    records = run_all.run_suite(names, quick=True, models="demo", scripts=scripts, results=results)
    hang = run_all.run_suite(["hang"], timeout=1, scripts=scripts, results=results)
    status = {r["name"]: r["status"] for r in records}
    assert status == {
        "decode_throughput": "ok",
        "first_paint": "exit 3",
        "memory": "no script",
        "switch": "ok",
    }
    assert hang[0]["status"] == "timed out after 1 s" and hang[0]["seconds"] < 20
    assert Path(records[0]["result"]).name.startswith("decode_throughput-")
    assert records[1]["result"] is None and records[1]["tail"] == ["boom"]

    manifest = results / "run_all-20990101-000000.json"
    run = {"started_stamp": "20200101-000000", "quick": True, "benchmarks": records}
    manifest.write_text(json.dumps(run))
    text = generate(paths, manifest)
    assert "| 1-2 | Decode throughput and time to first token | CPU |" in text
    assert "| 1/1 | ✓; latest attempt failed: exit 3 |" in text  # the earlier first_paint result
    assert "> ⚠ The latest attempt failed (exit 3); this is an earlier result." in text
    assert f"`{old.name}`" in text
    assert "| 7 | Memory | — | — | — | ✗ failed: no script |" in text
    assert "quick run" in text.split("### 1-2.")[1].split("###")[0]
    view = report.console_view(text)
    assert view.startswith("## Overview") and "## Analysis" not in view and "![" not in view


def test_run_all_rejects_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_all.main(["--only", "decode_throughput,nope"])
    assert exit_.value.code == 2
    assert "unknown benchmark nope" in capsys.readouterr().err


def test_a_plot_that_fails_to_draw_costs_only_itself(
    paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def draw(path: Path, title: str, series: Any, meta: dict[str, Any]) -> None:
        if meta.get("broken"):
            raise ValueError("cannot draw")
        path.write_bytes(PNG)

    monkeypatch.setattr(plotting, "draw", draw)
    plots = {"fine": [[1, 2]], "bad": {"series": [[1, 2]], "broken": True}}
    result(paths["results"], "scaling", "20260101-120000", [row("decode", 9, "tok/s")], plots=plots)
    text = generate(paths)
    assert "(plots/scaling-fine.png)" in text and "scaling-bad" not in text
    assert [p.name for p in paths["plots"].iterdir()] == ["scaling-fine.png"]
