"""Profiles of the two hot paths with py-spy, summarised as the functions with the most samples.

- ``indexing``: a real worker indexing ``--size`` listings from Kafka (the broker must run),
  sampled from its first index commit until its index holds every listing;
- ``fanout``: the explorer's search path (``bench.exploration.pipeline_searches``, the
  keyword queries of the synthetic marketplace cycled to 8,000 searches) on the project's
  index (``search.open_replica``) of ``--size`` listings, in a child process sampled while it
  searches.

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


_PROJECT = ("agents/", "streams/", "schemas/", "search/", "config/", "bench/", "cli/",
            "trainer/", "serving/")


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


def main() -> None:
    """Profile one path; write ``<out>.txt`` and ``<out>.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", choices=["indexing", "fanout", "fanout-child"])
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
    else:
        report = profile_fanout(args.size or 20_000, args.out)
    args.out.with_suffix(".md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
