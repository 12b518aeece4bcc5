"""Write BENCHMARKS.md and its plots from the newest result of each benchmark in bench/results/.

    python bench/report.py [--results bench/results] [--out BENCHMARKS.md] [--plots bench/plots]
                           [--run bench/results/run_all-STAMP.json]

A result file (``common.write_result``) holds ``summary`` (uniform rows, see ``common.row``),
``machine``, ``load_average`` and optional ``plots``; this module knows no benchmark's internals.
The newest result is kept per benchmark *and* machine kind, so a GPU run does not hide the CPU
one. ``--run`` (what ``run_all.py`` passes) names the results of that run and its failures. The
hand-written block between ``<!-- analysis -->`` and ``<!-- /analysis -->`` survives regeneration.

``plots`` entries take the shapes described in ``bench/plots.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plots as plotting  # bench/ is on sys.path: scripts run as python bench/NAME.py
from plots import is_number, number, series_of, slug

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PLOTS = REPO / "bench" / "plots"
OUT = REPO / "BENCHMARKS.md"
ANALYSIS_START, ANALYSIS_END = "<!-- analysis -->", "<!-- /analysis -->"
#: The suite in run order: script name → the issue's item(s) and a title.
BENCHMARKS: dict[str, str] = {
    "decode_throughput": "1-2. Decode throughput and time to first token",
    "first_paint": "3. First paint",
    "input_latency": "4. Input latency while streaming",
    "switch": "5. Precision switch",
    "detector": "6. Detector",
    "memory": "7. Memory",
    "scaling": "8. Scaling",
    "conversation": "9. Conversations: KV cache reuse and the first reply",
}
RUN_PREFIX = "run_all-"
_STAMP = re.compile(r"-(\d{8}-\d{6})\.json$")


@dataclass
class Result:
    """One result file."""

    path: Path
    data: dict[str, Any]

    @property
    def name(self) -> str:
        bare = _STAMP.sub("", self.path.name)  # NAME-STAMP.json → NAME
        return str(
            self.data.get("benchmark") or (bare if bare != self.path.name else self.path.stem)
        )

    @property
    def stamp(self) -> str:
        found = _STAMP.search(self.path.name)
        mtime = time.localtime(self.path.stat().st_mtime)
        return found.group(1) if found else time.strftime("%Y%m%d-%H%M%S", mtime)

    @property
    def date(self) -> str:
        """When it was written ("YYYY-mm-dd HH:MM:SS ZONE"), from the file name if not recorded."""
        stamp = self.stamp
        default = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}:{stamp[13:]}"
        return str(self.data.get("date") or default)

    @property
    def machine(self) -> dict[str, Any]:
        return dict(self.data.get("machine") or {})

    @property
    def gpu(self) -> str:
        """The card(s) it ran on, "" for a CPU-only machine."""
        return ", ".join(str(g) for g in self.machine.get("gpus") or [])

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [r for r in self.data.get("summary") or [] if isinstance(r, dict)]


@dataclass
class Run:
    """What run_all.py recorded: each benchmark's status and result file."""

    started: str = ""
    quick: bool = False
    status: dict[str, str] = field(default_factory=dict)  # name → "ok" or why it failed
    results: list[Path] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Run:
        data = json.loads(path.read_text())
        run = cls(started=str(data.get("started_stamp", "")), quick=bool(data.get("quick")))
        for entry in data.get("benchmarks", []):
            run.status[entry["name"]] = entry["status"]
            if entry.get("result"):
                run.results.append(Path(entry["result"]))
        return run


# -- loading --------------------------------------------------------------------------------------
def load_results(folder: Path) -> list[Result]:
    """Every result file in ``folder`` with a ``summary`` list (older formats are skipped)."""
    found = []
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith(RUN_PREFIX):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"report: skipping {path.name}: {exc}", file=sys.stderr)
            continue
        if isinstance(data, dict) and isinstance(data.get("summary"), list):
            found.append(Result(path, data))
    return found


def select(results: list[Result], chosen: Sequence[Path] = ()) -> dict[tuple[str, str], Result]:
    """Newest result per (benchmark, GPU label); a result named in ``chosen`` wins its slot."""
    picked: dict[tuple[str, str], Result] = {}
    for result in sorted(results, key=lambda r: r.stamp):
        picked[(result.name, result.gpu)] = result
    wanted = {p.resolve() for p in chosen}
    for result in results:
        if result.path.resolve() in wanted:
            picked[(result.name, result.gpu)] = result
    order = list(BENCHMARKS)
    return dict(
        sorted(picked.items(), key=lambda kv: (_index(order, kv[0][0]), kv[0][0], kv[0][1]))
    )


def _index(order: list[str], name: str) -> int:
    return order.index(name) if name in order else len(order)


# -- formatting -----------------------------------------------------------------------------------
def with_unit(value: Any, unit: str) -> str:
    text = number(value)
    if text == "—" or not unit:
        return text
    return f"{text}{unit}" if unit == "x" else f"{text} {unit}"


def ratio(row: dict[str, Any]) -> float | None:
    """The row's ratio to its baseline: the value itself for unit "x"."""
    value, baseline = row.get("value"), row.get("baseline")
    if not isinstance(value, (int, float)):
        return None
    if row.get("unit") == "x":
        return float(value)
    if isinstance(baseline, (int, float)) and baseline:
        return float(value) / float(baseline)
    return None


def cell(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def met_mark(met: Any) -> str:
    return {True: "✓", False: "✗"}.get(met, "") if isinstance(met, bool) else ""


def row_table(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown table of a result's summary rows (a Note column only when there are notes)."""
    notes = any(r.get("note") for r in rows)
    head = ["Metric", "Model", "Dtype", "Mode", "Value", "Baseline", "Ratio", "Target", "Met"]
    lines = ["| " + " | ".join(head + ["Note"] * notes) + " |", "|" + "---|" * (9 + notes)]
    for r in rows:
        unit = str(r.get("unit") or "")
        cells = [r.get("metric"), r.get("model"), r.get("dtype"), r.get("mode")]
        cells += [with_unit(r.get("value"), unit), with_unit(r.get("baseline"), unit)]
        cells += [with_unit(ratio(r), "x") if ratio(r) is not None else "", r.get("target")]
        cells += [met_mark(r.get("met"))] + [r.get("note")] * notes
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return lines


def machine_line(m: dict[str, Any]) -> str:
    threads = f", torch threads {m['torch_threads']}" if m.get("torch_threads") else ""
    gpus = ", ".join(str(g) for g in m.get("gpus") or []) or "none"
    return (
        f"CPU {m.get('cpu', '?')} ({m.get('cores', '?')} cores{threads}); GPU: {gpus}; "
        f"torch {m.get('torch', '?')}, transformers {m.get('transformers', '?')}, "
        f"Python {m.get('python', '?')}; {m.get('platform', '')}".rstrip("; ")
    )


def busy(result: Result) -> bool:
    """More runnable processes than cores when it finished: others competed with the benchmark
    (which itself keeps at most every core busy)."""
    load, cores = result.data.get("load_average") or [0.0], result.machine.get("cores")
    return isinstance(cores, int) and float(load[0]) > cores


def run_line(result: Result, quick: bool) -> str:
    parts = [f"Run {result.date}", f"`{result.path.name}`"]
    settings = result.data.get("settings")
    if quick or result.data.get("quick") or (isinstance(settings, dict) and settings.get("quick")):
        parts.append("quick run")
    if isinstance(settings, dict):
        given = [f"{k}={v}" for k, v in settings.items() if v is not None and k != "quick"]
        parts += ["settings: " + ", ".join(given)] if given else []
    load, cores = result.data.get("load_average"), result.machine.get("cores", "?")
    if load:
        loads = " / ".join(f"{float(x):.2f}" for x in load)
        parts.append(f"load {loads} (1/5/15 min) on {cores} cores")
    if result.gpu:
        parts.append(f"**GPU: {result.gpu}**")
    line = " · ".join(parts)
    return line + (" · ⚠ busy machine: figures are noisy" if busy(result) else "")


def derived_plots(result: Result) -> dict[str, Any]:
    """For a result without ``plots``: mergechat vs baseline bars, one plot per unit."""
    plots: dict[str, Any] = {}
    for r in result.rows:
        unit = str(r.get("unit") or "")
        if unit in ("", "x") or not is_number(r.get("value")):
            continue
        label = " ".join(str(r.get(k)) for k in ("metric", "model", "dtype", "mode") if r.get(k))
        series = plots.setdefault(unit, {"series": {}, "ylabel": unit})["series"]
        series.setdefault("mergechat", []).append([label, r["value"]])
        if is_number(r.get("baseline")):
            series.setdefault("baseline", []).append([label, r["baseline"]])
    return plots


def write_plots(result: Result, folder: Path) -> list[tuple[str, Path]]:
    """Draw every plot of ``result`` into ``folder``; (title, file) of each one drawn."""
    drawn = []
    plots = result.data.get("plots") or derived_plots(result)
    for name, spec in plots.items() if isinstance(plots, dict) else []:
        series, meta = series_of(spec)
        if not series:
            continue
        gpu = f" ({result.gpu})" if result.gpu else ""
        path = folder / f"{result.name}{'-' + slug(result.gpu) if gpu else ''}-{slug(name)}.png"
        try:
            plotting.draw(path, f"{result.name}: {name}{gpu}", series, meta)
        except Exception as exc:  # one odd plot must not cost the whole report
            print(f"report: plot {name!r} of {result.path.name} failed: {exc}", file=sys.stderr)
            continue
        drawn.append((f"{meta.get('title') or name}{gpu}", path))
    return drawn


# -- the document ---------------------------------------------------------------------------------
def kept_analysis(previous: str) -> str:
    """The hand-written analysis block of the previous BENCHMARKS.md (a placeholder if none)."""
    start = previous.find(ANALYSIS_START)
    end = previous.find(ANALYSIS_END, start + 1)
    if start >= 0 and end >= 0:
        return previous[start + len(ANALYSIS_START) : end]
    return "\n_Causes of missed targets, written by hand (report.py keeps this block)._\n"


@dataclass
class Section:
    """One benchmark on one machine kind: its result (None: not run) and the run's failure."""

    name: str
    result: Result | None
    failed: str = ""  # why the latest run_all attempt failed, unless a newer result replaced it

    @property
    def number(self) -> str:
        return BENCHMARKS.get(self.name, "").partition(". ")[0]

    @property
    def title(self) -> str:
        return BENCHMARKS.get(self.name, f". {self.name}").partition(". ")[2]

    @property
    def targets(self) -> list[dict[str, Any]]:
        rows = self.result.rows if self.result else []
        return [r for r in rows if isinstance(r.get("met"), bool)]


def sections(picked: dict[tuple[str, str], Result], run: Run | None) -> list[Section]:
    """Every known benchmark (not run ones too), then any other benchmark with a result."""
    names = list(BENCHMARKS) + sorted({n for n, _ in picked} - set(BENCHMARKS))
    found = []
    for name in names:
        results: list[Result | None] = [r for (n, _), r in picked.items() if n == name]
        for result in results or [None]:
            status = run.status.get(name, "ok") if run else "ok"
            newer = result is not None and run is not None and result.stamp >= run.started
            found.append(Section(name, result, "" if status == "ok" or newer else status))
    return found


def missed_line(section: Section, r: dict[str, Any]) -> str:
    where = f" on {section.result.gpu}" if section.result and section.result.gpu else ""
    what = ", ".join(str(r[k]) for k in ("model", "dtype", "mode") if r.get(k))
    shown = with_unit(r.get("value"), str(r.get("unit") or ""))
    if r.get("unit") != "x" and ratio(r) is not None:
        shown += f" (ratio {with_unit(ratio(r), 'x')})"
    line = f"- **{section.title}**{where}: {r.get('metric')}" + (f" ({what})" if what else "")
    line += f" = {shown}, target {r.get('target') or '—'}"
    return line + (f" — {r['note']}" if r.get("note") else "")


def overview(all_: list[Section]) -> list[str]:
    """The one-line-per-benchmark table."""
    out = ["| # | Benchmark | Machine | Run | Targets met | Status |", "|---|---|---|---|---|---|"]
    for s in all_:
        if s.result is None:
            status = f"✗ failed: {s.failed}" if s.failed else "not run"
            out.append(f"| {s.number} | {s.title} | — | — | — | {status} |")
            continue
        misses = sum(r["met"] is False for r in s.targets)
        status = f"✗ {misses} missed" if misses else ("✓" if s.targets else "no targets")
        status += f"; latest attempt failed: {s.failed}" if s.failed else ""
        status += " · ⚠ busy" if busy(s.result) else ""
        met = f"{len(s.targets) - misses}/{len(s.targets)}" if s.targets else "—"
        date = s.result.date[:16]
        where = s.result.gpu or "CPU"
        out.append(f"| {s.number} | {s.title} | {where} | {date} | {met} | {status} |")
    return out


def details(s: Section, images: list[tuple[str, Path]], base: Path, run: Run | None) -> list[str]:
    """A benchmark's section: heading, run line, table of its rows, plots."""
    gpu = f" — {s.result.gpu}" if s.result and s.result.gpu else ""
    out = [f"### {s.number + '. ' if s.number else ''}{s.title}{gpu}", ""]
    if s.result is None:
        why = f"the latest attempt failed ({s.failed})" if s.failed else "no result yet"
        return [*out, f"Not run: {why}. Run `python bench/run_all.py --only {s.name}`.", ""]
    if s.failed:
        out += [f"> ⚠ The latest attempt failed ({s.failed}); this is an earlier result.", ""]
    quick = run is not None and run.quick and s.result.path in run.results
    out += [run_line(s.result, quick), ""]
    out += [*(row_table(s.result.rows) if s.result.rows else ["_No summary rows._"]), ""]
    for caption, path in images:
        out += [f"![{caption}]({Path(os.path.relpath(path, base)).as_posix()})", ""]
    return out


HEADER = """# Benchmarks

<!-- Written by bench/report.py from bench/results/*.json: edit only the analysis block. -->

Generated {now} from the newest result of each benchmark (per machine kind) in
`bench/results/`. Each ratio compares mergechat with its baseline measured in the same run,
interleaved (A B A B); figures are medians of repetitions.
"""

FOOTER = """## Rerunning

```sh
python bench/run_all.py          # the whole suite: ~15 min on a quiet 2-core machine
python bench/run_all.py --quick  # fewer repetitions and tokens: a few minutes
python bench/run_all.py --only decode_throughput,detector --models demo
python bench/report.py           # rebuild this file and bench/plots/ from bench/results/
```

Each benchmark also runs alone (`python bench/NAME.py --help`) and writes
`bench/results/NAME-STAMP.json`; `run_all.py` records each run's outcome in
`bench/results/run_all-STAMP.json`. Run on a quiet machine: other processes skew every figure
(each section shows the load average when its benchmark finished).
"""


def render(
    picked: dict[tuple[str, str], Result],
    plots: dict[tuple[str, str], list[tuple[str, Path]]],
    analysis: str,
    run: Run | None = None,
    base: Path = REPO,
    plot_note: str = "",
) -> str:
    """BENCHMARKS.md's text; ``base`` is its folder (image links are relative to it)."""
    out = [HEADER.format(now=time.strftime("%Y-%m-%d %H:%M %Z")), "## Machine", ""]
    machines: dict[str, list[str]] = {}
    for (name, _), result in picked.items():
        machines.setdefault(machine_line(result.machine), []).append(name)
    for line, used_by in machines.items():
        out.append(f"- {line}" + (f" — {', '.join(used_by)}" if len(machines) > 1 else ""))
    out += [] if machines else ["- No results yet."]
    noisy = sum(busy(r) for r in picked.values())
    if noisy:
        out += ["", f"> ⚠ The load average was above the core count in {noisy} of {len(picked)}"]
        out[-1] += " runs (marked busy below): other processes competed, so figures are noisy."
    all_ = sections(picked, run)
    out += ["", "## Overview", "", *overview(all_), "", "## Targets missed", ""]
    misses = [missed_line(s, r) for s in all_ for r in s.targets if r["met"] is False]
    out += misses or ["None: every target with a figure in these results was met."]
    out += ["", "## Analysis", "", ANALYSIS_START + analysis + ANALYSIS_END, "", "## Results", ""]
    out += [f"> {plot_note}", ""] if plot_note else []
    for s in all_:
        key = (s.name, s.result.gpu if s.result else "")
        out += details(s, plots.get(key, []), base, run)
    return "\n".join(out) + "\n" + FOOTER


def console_view(markdown: str) -> str:
    """The overview, missed targets and tables of ``markdown``, for a terminal."""
    body = markdown[markdown.find("## Overview") : markdown.find("## Rerunning")]
    start, end = body.find("## Analysis"), body.find(ANALYSIS_END)
    if start >= 0 and end >= 0:
        body = body[:start] + body[end + len(ANALYSIS_END) :].lstrip()
    text = "\n".join(line for line in body.splitlines() if not line.startswith("!["))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def generate(
    results: Path = RESULTS, out: Path = OUT, plots_dir: Path = PLOTS, run_file: Path | None = None
) -> str:
    """Write ``out`` and the PNGs in ``plots_dir`` (stale PNGs there are removed); the text."""
    run = Run.load(run_file) if run_file else None
    picked = select(load_results(results), run.results if run else [])
    drawn: dict[tuple[str, str], list[tuple[str, Path]]] = {}
    note = ""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        note = "Plots skipped: matplotlib is not installed (`pip install -e '.[dev]'`)."
    if not note:
        plots_dir.mkdir(parents=True, exist_ok=True)
        drawn = {key: write_plots(result, plots_dir) for key, result in picked.items()}
        fresh = {path.resolve() for pairs in drawn.values() for _, path in pairs}
        for old in plots_dir.glob("*.png"):
            if old.resolve() not in fresh:
                old.unlink()
    previous = out.read_text() if out.exists() else ""
    text = render(picked, drawn, kept_analysis(previous), run, out.resolve().parent, note)
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of result JSONs")
    parser.add_argument("--out", type=Path, default=OUT, help="the Markdown file to write")
    parser.add_argument("--plots", type=Path, default=PLOTS, help="folder for the PNG plots")
    parser.add_argument("--run", type=Path, default=None, help="a run_all-STAMP.json record")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        print(f"report: no results folder {args.results}", file=sys.stderr)
        return 2
    generate(args.results, args.out, args.plots, args.run)
    print(f"report: wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
