"""The pure half of the benchmark report: percentiles, spreads, comparison rows, Markdown.

Every benchmark returns *rows*. A row compares one figure of the pipeline with the raw ceiling
measured in the same run (or with none, where no ceiling exists), over the same repeats::

    {"benchmark": "indexing", "metric": "listings/s into a searchable index", "unit": "/s",
     "better": "higher", "pipeline": {"median": ..., "min": ..., "max": ..., "n": 3,
     "values": [...]}, "ceiling": {"name": "raw_tantivy", "median": ..., ...} | None,
     "ratio": pipeline median / ceiling median | None,
     "ratio_per_repeat": spread of the paired per-repeat ratios | None, "note": ""}

Nothing here touches Kafka, Tantivy or the clock, so it is unit-tested
(``tests/unit/test_bench_report.py``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

from bench import guard

#: Units a row may use, and how their numbers are printed.
UNITS = ("/s", "ms", "MB", "B", "count")


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks (the
    same definition as numpy's default). Raises ValueError on no values or q out of range."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0-100, got {q}")
    position = (len(data) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


def latency_summary(seconds: Sequence[float]) -> dict:
    """p50/p95/p99, mean and max of latencies given in seconds, reported in milliseconds."""
    if not seconds:
        return {"n": 0}
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
            "p99_ms": percentile(ms, 99), "mean_ms": statistics.fmean(ms), "max_ms": max(ms)}


def spread(values: Sequence[float]) -> dict:
    """Median, min and max of one figure over repeats (and the values themselves)."""
    if not values:
        raise ValueError("spread of no values")
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "values": list(values)}


def comparison(benchmark: str, metric: str, unit: str, pipeline: Sequence[float], *,
               ceiling: Sequence[float] | None = None, ceiling_name: str = "",
               better: str = "higher", note: str = "") -> dict:
    """One row of the report: the pipeline's figure over repeats against a ceiling.

    ``ratio`` is the pipeline's median over the ceiling's median; ``ratio_per_repeat`` is
    the spread of the ratios of values measured in the same repeat (when both sides have as
    many values).
    """
    if unit not in UNITS:
        raise ValueError(f"unit {unit!r} is not one of {UNITS}")
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', got {better!r}")
    row = {"benchmark": benchmark, "metric": metric, "unit": unit, "better": better,
           "pipeline": spread(pipeline), "ceiling": None, "ratio": None,
           "ratio_per_repeat": None, "note": note}
    if ceiling:
        row["ceiling"] = {"name": ceiling_name or "ceiling", **spread(ceiling)}
        if row["ceiling"]["median"]:
            row["ratio"] = row["pipeline"]["median"] / row["ceiling"]["median"]
        if len(ceiling) == len(pipeline) and all(ceiling):
            row["ratio_per_repeat"] = spread([p / c for p, c in zip(pipeline, ceiling,
                                                                     strict=True)])
    return row


def fmt(value: float | None, unit: str) -> str:
    """A number as the report prints it in ``unit``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit in ("/s", "B", "count"):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    if unit == "ms":
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
    return f"{value:,.1f}"


def _cell(figure: dict | None, unit: str) -> tuple[str, str]:
    if figure is None:
        return "-", "-"
    return fmt(figure["median"], unit), f"{fmt(figure['min'], unit)}-{fmt(figure['max'], unit)}"


TABLE_HEADER = ("| benchmark | metric | unit | pipeline (median) | min-max | ceiling | "
                "ceiling (median) | min-max | ratio |")


def table(rows: Iterable[dict]) -> str:
    """The rows as one Markdown table (ratio = pipeline median / ceiling median)."""
    lines = [TABLE_HEADER, "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        unit = row["unit"]
        median, span = _cell(row["pipeline"], unit)
        ceiling = row["ceiling"]
        c_median, c_span = _cell(ceiling, unit)
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(f"| {row['benchmark']} | {row['metric']} | {unit} | {median} | {span} | "
                     f"{ceiling['name'] if ceiling else '-'} | {c_median} | {c_span} | "
                     f"{ratio} |")
    return "\n".join(lines) + "\n"


def markdown(report: dict) -> str:
    """The whole report as Markdown: what ran where, the table, then each benchmark's notes."""
    machine = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
    lines = [
        "# QExplorer benchmarks", "",
        f"`{report['command']}`", "",
        f"- started {report['started_at']}, took {report['duration_s']:.0f} s; "
        f"size cap {report['params'].get('size') or 'default'}, "
        f"{report['params']['repeats']} repeats",
        f"- machine: {machine['platform']}, {machine['cpus']} cpus, Python {machine['python']}"
        + (f"; {versions}" if versions else ""),
    ]
    git = report.get("git")
    if git:
        dirty = git.get("dirty_files") or []
        lines.append(f"- code: {git.get('commit', '?')[:12]}"
                     + (f" with {len(dirty)} uncommitted files" if dirty else ""))
    lines += ["", "Medians over the repeats, min-max across them; each ceiling is measured in "
              "the same run; ratio = pipeline median / ceiling median.", ""]
    rows = [row for bench in report["benchmarks"].values() for row in bench.get("rows", [])]
    lines.append(table(rows))
    for name, bench in report["benchmarks"].items():
        notes = list(bench.get("notes", []))
        if bench.get("error"):
            notes.insert(0, f"FAILED: {bench['error']}")
        took = bench.get("duration_s")
        lines.append(f"## {name}" + (f" ({took:.0f} s)" if took is not None else ""))
        lines.append("")
        lines += [f"- {note}" for note in notes] or ["- (no notes)"]
        lines.append("")
    if report.get("against"):
        lines += guard.markdown(report["against"])
    return "\n".join(lines).rstrip() + "\n"
