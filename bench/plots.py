"""Plot data for BENCHMARKS.md: normalise a result's ``plots`` entries and draw PNGs.

``plots`` maps a plot's name to any of these (numeric x: line plot; other x: grouped bars)::

    [[x, y], ...]  or  [{"x": x, "y": y}, ...]     one series
    {"series name": [[x, y], ...] or {x: y}, ...}  several series
    {x: y, ...}                                    one series of categories
    {"series": <one of the above>, "title": ..., "xlabel": ..., "ylabel": ...,
     "kind": "line" | "bar", "logx": bool, "logy": bool, "target": y of a dashed line}
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

Series = dict[str, list[tuple[Any, float]]]


def number(value: Any) -> str:
    """A figure with three significant digits (whole numbers from 100 up); "—" when missing."""
    if not is_number(value):
        return "—" if value is None or isinstance(value, float) else str(value)
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def series_of(spec: Any) -> tuple[Series, dict[str, Any]]:
    """Normalise one ``plots`` entry (shapes in the module docstring) to series and options."""
    meta: dict[str, Any] = {}
    if isinstance(spec, dict) and "series" in spec:
        meta = {k: v for k, v in spec.items() if k != "series"}
        spec = spec["series"]
    series: Series = {}
    if isinstance(spec, list):
        series[""] = _points(spec)
    elif isinstance(spec, dict):
        for key, value in spec.items():
            if isinstance(value, (list, dict)):
                series[str(key)] = _points(value)
            elif is_number(value):
                series.setdefault("", []).append((key, float(value)))
    return {k: v for k, v in series.items() if v}, meta


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _points(data: list[Any] | dict[str, Any]) -> list[tuple[Any, float]]:
    pairs: list[tuple[Any, Any]] = []
    if isinstance(data, dict):
        pairs = list(data.items())
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict) and "x" in item and "y" in item:
            pairs.append((item["x"], item["y"]))
        elif isinstance(item, (list, tuple)) and len(item) >= 2:
            pairs.append((item[0], item[1]))
    return [(x, float(y)) for x, y in pairs if is_number(y)]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "plot"


def draw(path: Path, title: str, series: Series, meta: dict[str, Any]) -> None:
    """One PNG: lines for numeric x, grouped bars otherwise."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    count = sum(len(points) for points in series.values())
    fig = Figure(figsize=(min(14, max(7, 2 + 0.3 * count)), 4), layout="constrained")
    ax = fig.add_subplot()
    numeric = all(is_number(x) for points in series.values() for x, _ in points)
    if meta.get("kind", "line" if numeric else "bar") == "line" and numeric:
        for name, points in series.items():
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=name)
        xs = [float(x) for points in series.values() for x, _ in points]
        if meta.get("logx", min(xs) > 0 and max(xs) / min(xs) >= 16):
            ax.set_xscale("log", base=2)
            ax.xaxis.set_minor_formatter(NullFormatter())
        if len(set(xs)) <= 12:  # label the measured points themselves, not powers of two
            ax.set_xticks(sorted(set(xs)), [number(x) for x in sorted(set(xs))])
    else:
        categories = list(dict.fromkeys(str(x) for points in series.values() for x, _ in points))
        width = 0.8 / len(series)
        for i, (name, points) in enumerate(series.items()):
            values = dict((str(x), y) for x, y in points)
            spots = [c + (i - (len(series) - 1) / 2) * width for c in range(len(categories))]
            heights = [values.get(c, math.nan) for c in categories]
            bars = ax.bar(spots, heights, width, label=name)
            ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.set_xticks(range(len(categories)), categories, rotation=20 if len(categories) > 4 else 0)
    if is_number(meta.get("target")):
        ax.axhline(meta["target"], color="crimson", linestyle="--", linewidth=1, label="target")
    if meta.get("logy"):
        ax.set_yscale("log")
        ys = [y for points in series.values() for _, y in points if y > 0] or [1.0]
        ax.set_ylim(min(ys) / 2, max(ys) * 1.5)  # bars start at the axis: show the shortest too
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: number(y)))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_title(str(meta.get("title") or title), fontsize=10)
    ax.set_xlabel(str(meta.get("xlabel", "")))
    ax.set_ylabel(str(meta.get("ylabel", "")))
    ax.grid(alpha=0.3)
    if len(series) > 1 or any(series) or "target" in meta:
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
