"""Scaling: what the project's index costs as it grows (10k, 100k, 1M listings).

For each size, in a fresh process (so its memory figure is not another size's leftovers):

- indexing rate of the project's index through the search protocol (opened as the worker
  opens its replica, ``search.open_replica``: ``SearchIndex.apply`` of the listings with their
  messages, one commit with offsets) against raw tantivy-py bulk indexing of the same
  listings (the ceiling);
- index size on disk after the writer's merges finished;
- search latency p50/p95: ``search.protocol.search`` (top N, stored fields fetched, as the
  explorer runs it) one query at a time, for the keywords extractor's queries of the
  marketplace's toxic items, on the index closed and reopened;
- process memory per listing: resident memory (RSS) after the commit minus before the index
  was opened, divided by the listings, measured in the first repeat only (a later repeat
  would reuse memory the first one freed).

Listings come from the synthetic generator (about 40 s for a million on 2 cores, excluded
from every figure). ``--size`` caps the largest size.

Usage: ``.venv/bin/python -m bench.scaling --size 1000000 --repeats 3 --out .cache/bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from agents.extractor.base import SeedText
from agents.extractor.keywords import KeywordsExtractor
from bench.common import (
    as_changes,
    as_listings,
    dir_bytes,
    open_index,
    rss_bytes,
    synthetic_items,
    write_report,
)
from bench.indexing import raw_tantivy
from bench.report import comparison, latency_summary, markdown
from qexplorer.config import PROJECT_ROOT, Settings
from qexplorer.search.protocol import search

SIZES = (10_000, 100_000, 1_000_000)
MAX_QUERIES = 400


def sizes_up_to(cap: int | None, sizes: Sequence[int] = SIZES) -> list[int]:
    """The sizes to run: the defaults up to ``cap``, plus ``cap`` itself when it lies
    between them (None: all defaults)."""
    if cap is None:
        return list(sizes)
    if cap < 1:
        raise ValueError(f"size must be positive, got {cap}")
    chosen = [s for s in sizes if s <= cap]
    return [*chosen, cap] if cap not in chosen and cap < max(sizes) else chosen


def measure_size(size: int, repeats: int, progress: Callable[[str], None]) -> dict:
    """All figures of one size (run in a fresh process, see ``main``)."""
    settings = Settings()
    items = synthetic_items(size)
    listings = as_listings(items)
    seeds = [SeedText(i.id, i.title, i.description) for i in items if i.harmful]
    extractions = asyncio.run(KeywordsExtractor().extract(
        seeds, settings.exploration.queries_per_seed))
    queries = [(q, e.seed_id) for e in extractions for q in e.queries][:MAX_QUERIES]
    del items
    changes = as_changes(listings)  # as the replica hands them to the index
    limit = settings.exploration.results_per_query
    out: dict = {"size": size, "queries": len(queries), "index_s": [], "raw_s": [],
                 "disk_bytes": [], "search": [], "rss_delta_bytes": None}
    for repeat in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)  # holds the index and nothing else
            before = rss_bytes()
            started = time.perf_counter()
            index = open_index(directory, settings.index)
            index.apply(changes)
            index.commit({"listings": {0: size}})
            out["index_s"].append(time.perf_counter() - started)
            after = rss_bytes()
            if repeat == 0 and before is not None and after is not None:
                out["rss_delta_bytes"] = after - before
            index.close()  # waits for the merges
            out["disk_bytes"].append(dir_bytes(directory))
            reader = open_index(directory, settings.index)
            for query, seed in queries[:50]:  # warm-up
                search(reader, query, limit, (seed,))
            latencies = []
            for query, seed in queries:
                t = time.perf_counter()
                search(reader, query, limit, (seed,))
                latencies.append(time.perf_counter() - t)
            out["search"].append(latency_summary(latencies))
            reader.close()
            del reader, index
        out["raw_s"].append(raw_tantivy(listings))
        progress(f"scaling {size:,} repeat {repeat + 1}/{repeats}: index "
                 f"{out['index_s'][-1]:.1f}s, raw {out['raw_s'][-1]:.1f}s, search p50 "
                 f"{out['search'][-1]['p50_ms']:.2f} ms")
    return out


def _child(size: int, repeats: int, progress: Callable[[str], None]) -> dict:
    """Run ``measure_size`` in a new interpreter; its progress goes to our stderr."""
    command = [sys.executable, "-m", "bench.scaling", "--child", "--size", str(size),
               "--repeats", str(repeats)]
    with subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as child:
        assert child.stderr is not None and child.stdout is not None
        for line in child.stderr:
            progress(line.rstrip())
        output = child.stdout.read()
    if child.returncode != 0:
        raise RuntimeError(f"scaling at {size:,} failed with exit code {child.returncode}")
    return orjson.loads(output.strip().splitlines()[-1])


def run(settings: Settings, *, size: int | None, repeats: int,
        progress: Callable[[str], None] = print) -> dict:
    """The scaling benchmark for the aggregate report (``bench.run``)."""
    del settings  # each child reads the same environment
    results = [_child(n, repeats, progress) for n in sizes_up_to(size)]
    rows, notes = [], []
    for r in results:
        n = r["size"]
        label = f"{n:,} listings"
        rows.append(comparison("scaling", f"{label}: the project's index, listings/s", "/s",
                               [n / s for s in r["index_s"]],
                               ceiling=[n / s for s in r["raw_s"]],
                               ceiling_name="raw_tantivy"))
        rows.append(comparison("scaling", f"{label}: index on disk", "MB",
                               [b / 1e6 for b in r["disk_bytes"]], better="lower"))
        for q in ("p50", "p95"):
            rows.append(comparison("scaling", f"{label}: search latency {q} (1 thread)", "ms",
                                   [s[f"{q}_ms"] for s in r["search"]], better="lower"))
        if r["rss_delta_bytes"] is not None:
            rows.append(comparison("scaling", f"{label}: RSS delta per listing", "B",
                                   [r["rss_delta_bytes"] / n], better="lower",
                                   note="first repeat only"))
            notes.append(f"{label}: RSS grew {r['rss_delta_bytes'] / 1e6:,.0f} MB while "
                         f"indexing (first repeat, fresh process); disk "
                         f"{r['disk_bytes'][0] / n:,.0f} B per listing; search over "
                         f"{r['queries']} keyword queries")
    if size is not None and size < max(SIZES):
        notes.append(f"sizes capped at {size:,} by --size")
    return {"params": {"sizes": [r["size"] for r in results], "repeats": repeats},
            "rows": rows, "notes": notes, "details": {"sizes": results}}


def main() -> None:
    """Run the scaling benchmark alone (or, with ``--child``, one size for the parent)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=None, help="largest size (cap)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(".cache/bench"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure_size(args.size, args.repeats,
                              lambda line: print(line, file=sys.stderr, flush=True))
        print(orjson.dumps(result).decode())
        return
    started = time.time()
    section = run(Settings(), size=args.size, repeats=args.repeats)
    report = write_report(args.out, "scaling", {
        "params": {"size": args.size, "repeats": args.repeats},
        "benchmarks": {"scaling": section}}, started=started, render=markdown)
    print(markdown(report))


if __name__ == "__main__":
    main()
