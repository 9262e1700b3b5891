"""Profiles of the two hot paths with py-spy, summarised as the functions with the most samples.

- ``indexing``: a real worker indexing ``--size`` listings from Kafka (the broker must run),
  sampled from its first index commit until its index holds every listing;
- ``fanout``: the explorer's search path (``bench.exploration.pipeline_searches``, the
  keyword queries of the synthetic marketplace cycled to 8,000 searches) on the project's
  index (``search.open_replica``) of ``--size`` listings, in a child process sampled while it
  searches;
- ``fanout-parts``: the same queries' path step by step, timed in process on one thread, with
  the disguise folding on and off (no py-spy: a table of µs a query, ``<out>.md`` only).

py-spy samples Python frames of every thread (``--threads``), one every 1/rate s, so a sample
is 4 ms of a thread's time at the default rate; Tantivy's native indexing threads are not
sampled. Writes ``<out>.txt`` (py-spy's raw stacks) and ``<out>.md`` (the summary).

Usage: ``.venv/bin/python -m bench.profile indexing --out .cache/profiles/indexing``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.common import BenchCluster, git_state, synthetic_items, synthetic_listings
from qexplorer.config import Settings
from qexplorer.kafka.io import publish
from schemas.topics import LISTINGS

RATE = 250
FANOUT_QUERIES = 8_000
_FRAME = re.compile(r"^(?P<name>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _py_spy(pid: int, out: Path) -> subprocess.Popen:
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(py_spy), "record", "--pid", str(pid), "--rate", str(RATE),
                             "--format", "raw", "--threads", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(spy: subprocess.Popen) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    spy.wait(60)


_PROJECT = ("agents/", "streams/", "schemas/", "trainer/", "qexplorer/", "bench/")


def summarise(raw: Path, top: int = 12) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """All samples; the project's functions with the most samples (inclusive: the function
    and what it calls); the functions that were running in the most samples (self)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [m for m in (_FRAME.match(f) for f in stack.split(";")[1:]) if m]
        if not frames:  # the first frame names the thread
            continue
        total += n
        for name in {f"{m['name']} ({m['file']})" for m in frames
                     if m["file"].startswith(_PROJECT)}:
            inclusive[name] += n
        own[f"{frames[-1]['name']} ({frames[-1]['file']})"] += n
    return total, inclusive.most_common(top), own.most_common(top)


def markdown(title: str, what: str, raw: Path, per: str, scale: float) -> str:
    """The summary as Markdown: ``scale`` turns samples into ms ``per`` unit of work."""
    total, inclusive, own = summarise(raw)
    ms = 1000 / RATE * scale
    lines = [f"# Profile: {title}", "", what, "",
             f"py-spy at {RATE} samples/s on every thread; {total:,} samples "
             f"({total * ms:,.0f} ms {per}); code {git_state().get('commit', '?')[:12]}.", ""]
    for heading, rows in (("project function (inclusive)", inclusive),
                          ("running function (self)", own)):
        lines += [f"| {heading} | samples | ms {per} |", "|---|---|---|"]
        lines += [f"| `{name}` | {n:,} | {n * ms:,.0f} |" for name, n in rows]
        lines.append("")
    return "\n".join(lines)


# --- indexing --------------------------------------------------------------------------------


def profile_indexing(size: int, out: Path) -> str:
    """Sample a worker indexing ``size`` listings; returns the Markdown summary."""
    settings = Settings()
    listings = synthetic_listings(size)
    with BenchCluster(settings, "profile", out.parent / "logs") as cluster:
        asyncio.run(publish(cluster.settings.kafka, cluster.settings.topics, LISTINGS,
                            listings))
        process = cluster.start_worker("p")
        reader = cluster.reader("p")
        cluster.wait_count("p", reader, lambda n: n > 0)
        spy = _py_spy(process.pid, out.with_suffix(".txt"))
        started = time.perf_counter()
        try:
            cluster.wait_count("p", reader, lambda n: n >= size)
        finally:
            _stop(spy)
        took = time.perf_counter() - started
    what = (f"A worker indexing {size:,} synthetic listings from Kafka, sampled from its first "
            f"index commit until its index held all of them ({took:.1f} s).")
    return markdown("the indexing path", what, out.with_suffix(".txt"), "per 100k listings",
                    100_000 / size)


# --- fan-out ---------------------------------------------------------------------------------


def _fanout_child(size: int, go: Path) -> None:
    """Build the index and queries, wait for ``go`` to exist, then run the searches."""
    from agents.extractor.base import SeedText
    from agents.extractor.keywords import KeywordsExtractor
    from bench import exploration
    from bench.common import as_changes, as_listings, open_index

    settings = Settings()
    explore = settings.exploration
    items = synthetic_items(size, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        index = open_index(Path(tmp), settings.index)
        index.apply(as_changes(as_listings(items)))
        index.commit({})
        index.close()  # waits for the merges
        seeds = [SeedText(i.id, i.title, i.description) for i in items if i.harmful]
        extractions = asyncio.run(KeywordsExtractor().extract(seeds, explore.queries_per_seed))
        pairs = [(q, e.seed_id) for e in extractions for q in e.queries]
        pairs = [pairs[k % len(pairs)] for k in range(FANOUT_QUERIES)]
        reader = open_index(Path(tmp), settings.index)
        print("ready", flush=True)
        while not go.exists():
            time.sleep(0.05)
        seconds = sum(exploration.pipeline_searches(reader, pairs, explore.search_threads,
                                                    explore.results_per_query, explore.batch)
                      for _ in range(3))
        reader.close()
        print(f"{3 * len(pairs) / seconds:.0f} queries/s", flush=True)


def profile_fanout(size: int, out: Path) -> str:
    """Sample the explorer's search path in a child process; returns the Markdown summary."""
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        child = subprocess.Popen([sys.executable, "-m", "bench.profile", "fanout-child",
                                  "--size", str(size), "--go", str(go)],
                                 stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the fan-out child did not get ready")
        spy = _py_spy(child.pid, out.with_suffix(".txt"))
        time.sleep(1.0)  # py-spy attached
        go.touch()
        rate = child.stdout.readline().strip()
        child.wait(60)
        _stop(spy)
    what = (f"The explorer's search path on the project's index of {size:,} synthetic listings: "
            f"{FANOUT_QUERIES:,} keyword queries 3 times ({rate} under the profiler).")
    return markdown("the search fan-out", what, out.with_suffix(".txt"),
                    "per 1,000 queries", 1000 / (3 * FANOUT_QUERIES))


# --- fan-out, step by step --------------------------------------------------------------------


def _step_times(index, queries: list[str], limit: int) -> dict[str, float]:
    """Seconds each step of ``TantivyIndex._search`` takes over ``queries`` on one thread,
    the steps timed apart, and the path itself (``search_many``, a seed's worth at a time)."""
    from qexplorer.search.protocol import Hit
    from qexplorer.search.query import analyzed_query, to_search_text
    from qexplorer.search.tantivy_index import FOLDED_SEARCH_FIELDS, SEARCH_FIELDS

    raw = index.tantivy_index
    fold = index._fold
    fields = FOLDED_SEARCH_FIELDS if fold else SEARCH_FIELDS
    steps = dict.fromkeys(("escape and fold the text (to_search_text)",
                           "cut the terms into tokens (analyzed_query)", "parse",
                           "add the folded clauses", "search", "fetch the hits' documents",
                           "read them, build the hits"), 0.0)
    names = list(steps)
    searcher = raw.searcher()
    for query in queries:
        t0 = time.perf_counter()
        text = to_search_text(query, fold=fold)
        if not text:
            continue
        t1 = time.perf_counter()
        tokens = analyzed_query(text)
        if not tokens:
            continue
        ta = time.perf_counter()
        parsed = raw.parse_query(tokens, fields)
        t2 = time.perf_counter()
        if fold:
            parsed = index._with_folded(parsed, text)
        t3 = time.perf_counter()
        found = searcher.search(parsed, limit).hits
        t4 = time.perf_counter()
        docs = [(score, searcher.doc(address)) for score, address in found]
        t5 = time.perf_counter()
        [Hit(doc.get_first("id"), n + 1, score, *index._written(doc))
         for n, (score, doc) in enumerate(docs)]
        t6 = time.perf_counter()
        for name, seconds in zip(names, (t1 - t0, ta - t1, t2 - ta, t3 - t2, t4 - t3, t5 - t4,
                                         t6 - t5), strict=True):
            steps[name] += seconds
    started = time.perf_counter()
    for at in range(0, len(queries), 4):
        index.search_many(queries[at:at + 4], limit)
    steps["the path as it runs (search_many, timed alone)"] = time.perf_counter() - started
    return steps


def fanout_parts(size: int) -> str:
    """Where a fan-out query's time goes, in process on one thread, with the disguise folding
    on and off (two indexes of the same listings): µs a query per step, medians of 3
    passes. Returns the Markdown table."""
    import statistics

    from agents.extractor.base import SeedText
    from agents.extractor.keywords import KeywordsExtractor
    from bench.common import as_changes, as_listings
    from qexplorer.search.tantivy_index import TantivyIndex

    settings = Settings()
    items = synthetic_items(size, seed=3)
    seeds = [SeedText(i.id, i.title, i.description) for i in items if i.harmful]
    extractions = asyncio.run(KeywordsExtractor().extract(
        seeds, settings.exploration.queries_per_seed))
    queries = [q for e in extractions for q in e.queries]
    limit = settings.exploration.results_per_query
    columns = {}
    for fold in (True, False):
        index = TantivyIndex.open(None, fold=fold)
        index.apply(as_changes(as_listings(items)))
        index.commit({})
        _step_times(index, queries, limit)  # warm
        passes = [_step_times(index, queries, limit) for _ in range(3)]
        columns[fold] = {name: statistics.median(p[name] for p in passes) / len(queries) * 1e6
                         for name in passes[0]}
    lines = [f"In process, one thread, {len(queries):,} keyword queries of the synthetic "
             f"marketplace's seeds ({len(set(queries)):,} distinct) on {size:,} listings, "
             f"N={limit}; µs a query, medians of 3 passes; code "
             f"{git_state().get('commit', '?')[:12]}.", "",
             "| step | folding on | folding off |", "|---|---|---|"]
    for name in columns[True]:
        lines.append(f"| {name} | {columns[True][name]:.1f} | {columns[False][name]:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Profile one path; write ``<out>.txt`` and ``<out>.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", choices=["indexing", "fanout", "fanout-parts", "fanout-child"])
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path(".cache/profiles/profile"))
    parser.add_argument("--go", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.path == "fanout-child":
        _fanout_child(args.size, args.go)
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.path == "indexing":
        report = profile_indexing(args.size or 300_000, args.out)
    elif args.path == "fanout-parts":
        report = fanout_parts(args.size or 20_000)
    else:
        report = profile_fanout(args.size or 20_000, args.out)
    args.out.with_suffix(".md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
