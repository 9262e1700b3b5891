"""The guard against sliding back: a benchmark report's ratios against the last report kept in
the repository (``docs/results/bench/bench.json``; ``quick/bench.json`` for a quick run).

A ratio (the pipeline's median over its ceiling's, measured in the same run) travels between
machines and days better than a rate. Each row of a new report is matched to the kept report's
row of the same benchmark, metric and ceiling; it *moved* when the two ratios differ by more
than the noise, and *slid* when it moved the worse way (``better`` says which). The noise is
the larger of the two runs' spreads of the ratio over their repeats (max - min of
``ratio_per_repeat``) and :data:`BETWEEN_RUNS` of the kept ratio: on this busy 2-core machine
runs of one commit differ more than repeats of one run do.
A row with fewer than two repeats on either side has no noise to judge by: it is listed, not
judged. Pure functions; ``bench.run`` calls :func:`against` after the benchmarks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

#: The report kept in the repository, updated with each round of docs/benchmarks.md.
KEPT = Path("docs") / "results" / "bench" / "bench.json"
#: The kept report of ``qexplorer bench --quick`` (smaller sizes: compared with its own kind).
KEPT_QUICK = Path("docs") / "results" / "bench" / "quick" / "bench.json"
#: Share of the kept ratio the noise is at least. Six quick runs of one commit (2026-12-07):
#: the fan-out's ratio 0.18-0.42, on one thread 0.31-0.48; indexing's 0.10-0.17 of raw
#: Tantivy with the same analyzer; the burst's 0.09-0.15 of the extractor alone.
BETWEEN_RUNS = 0.45


@dataclass(frozen=True)
class Shift:
    """One ratio in the kept report and now."""

    benchmark: str
    metric: str
    ceiling: str
    before: float
    now: float
    noise: float | None  # None: a side has no spread over repeats
    better: str = "higher"

    @property
    def verdict(self) -> str:
        """``slid`` or ``rose`` (moved by more than the noise, the worse or the better way),
        ``steady``, or ``unjudged`` (no noise to judge by)."""
        if self.noise is None:
            return "unjudged"
        change = self.now - self.before
        if abs(change) <= self.noise:
            return "steady"
        return "rose" if (change > 0) == (self.better == "higher") else "slid"


def _key(row: dict) -> tuple[str, str, str] | None:
    ceiling = row.get("ceiling")
    if row.get("ratio") is None or not ceiling:
        return None
    return row["benchmark"], row["metric"], ceiling["name"]


def _spread(row: dict) -> float | None:
    per_repeat = row.get("ratio_per_repeat")
    if not per_repeat or per_repeat.get("n", 0) < 2:
        return None
    return per_repeat["max"] - per_repeat["min"]


def _rows(report: dict) -> dict[tuple[str, str, str], dict]:
    return {key: row for bench in report.get("benchmarks", {}).values()
            for row in bench.get("rows", []) if (key := _key(row)) is not None}


def compare(kept: dict, now: dict) -> list[Shift]:
    """Every ratio of ``now`` that ``kept`` has too, in ``now``'s order."""
    before = _rows(kept)
    shifts = []
    for key, row in _rows(now).items():
        old = before.get(key)
        if old is None:
            continue
        spreads = (_spread(old), _spread(row))
        noise = None if None in spreads else max(*spreads, BETWEEN_RUNS * abs(old["ratio"]))
        shifts.append(Shift(*key, before=old["ratio"], now=row["ratio"], noise=noise,
                            better=row.get("better", "higher")))
    return shifts


def load(path: Path) -> dict | None:
    """The kept report at ``path``; None when there is none (read before a run that may
    write over it)."""
    return orjson.loads(path.read_bytes()) if path.is_file() else None


def against(kept: dict, source: str, now: dict) -> dict:
    """The comparison a report carries (``report["against"]``): which report (``source``),
    of which commit, and every shift."""
    return {"report": source, "commit": (kept.get("git") or {}).get("commit"),
            "started_at": kept.get("started_at"),
            "shifts": [{**asdict(s), "verdict": s.verdict} for s in compare(kept, now)]}


def slid(comparison: dict | None) -> list[dict]:
    """The shifts of a comparison that slid."""
    return [s for s in (comparison or {}).get("shifts", []) if s["verdict"] == "slid"]


def markdown(comparison: dict) -> list[str]:
    """The comparison as report lines: a table of the ratios before and now."""
    commit = (comparison.get("commit") or "?")[:12]
    lines = [f"## Against the kept report ({comparison['report']}, {commit}, "
             f"{comparison.get('started_at') or '?'})", "",
             "A ratio moved when it changed by more than the noise (the larger spread of the "
             f"ratio over the two runs' repeats, and at least {BETWEEN_RUNS:.0%} of the kept "
             "ratio: runs of one commit differ that much here); slid: the worse way.", "",
             "| benchmark | metric | ceiling | ratio then | ratio now | noise | verdict |",
             "|---|---|---|---|---|---|---|"]
    for s in comparison["shifts"]:
        noise = "-" if s["noise"] is None else f"{s['noise']:.2f}"
        verdict = f"**{s['verdict']}**" if s["verdict"] in ("slid", "rose") else s["verdict"]
        lines.append(f"| {s['benchmark']} | {s['metric']} | {s['ceiling']} | "
                     f"{s['before']:.2f} | {s['now']:.2f} | {noise} | {verdict} |")
    if not comparison["shifts"]:
        lines.append("| (no row in common) | | | | | | |")
    return [*lines, ""]
