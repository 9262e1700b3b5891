"""Indexing throughput of the pipeline against its raw ceilings, measured in one run.

Three figures for the same synthetic listings, each repeated:

- ``raw_tantivy``: tantivy-py bulk indexing with its default tokenizer (the ceiling);
- ``listing_index``: the project's index alone (its analyzer, upsert-by-id, stored fields);
- ``pipeline``: a real worker process consuming the ``listings`` topic from a real broker into
  its replica, from its first commit to the commit that holds every listing (worker start-up
  excluded, decoding, validation and commits included).

Usage: ``.venv/bin/python -m bench.indexing --size 50000 --repeats 3 --out bench/results``.
It needs the broker (``qexplorer kafka start``, or KAFKA_BOOTSTRAP) for the pipeline figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import orjson
import tantivy

from agents.index import ListingIndex
from marketplace.items import to_listing_dict
from marketplace.synthetic import generate_marketplace
from schemas.models import ListingUpsert
from streams.settings import Settings


def raw_tantivy(listings: list[ListingUpsert]) -> float:
    """Seconds for tantivy-py to bulk index the listings' texts (default tokenizer)."""
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw")
    builder.add_text_field("title", stored=True)
    builder.add_text_field("description", stored=True)
    schema = builder.build()
    with tempfile.TemporaryDirectory() as path:
        index = tantivy.Index(schema, path)
        started = time.perf_counter()
        writer = index.writer(128_000_000)
        for listing in listings:
            writer.add_document(tantivy.Document(id=listing.id, title=listing.title,
                                                 description=listing.description))
        writer.commit()
        writer.wait_merging_threads()
        return time.perf_counter() - started


def listing_index(listings: list[ListingUpsert]) -> float:
    """Seconds for the project's ListingIndex to upsert and commit the listings."""
    with tempfile.TemporaryDirectory() as path:
        started = time.perf_counter()
        index = ListingIndex.open(Path(path))
        for listing in listings:
            index.upsert(listing)
        index.commit({})
        index.close()
        return time.perf_counter() - started


def pipeline(listings: list[ListingUpsert], settings: Settings) -> float:
    """Seconds a real worker takes from its first index commit to holding every listing,
    scaled to the whole set (the listings in the first commit are not counted)."""
    from streams.client import publish
    from streams.supervise import spawn_worker, stop_worker
    from streams.topics import create_topics, delete_topics

    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as state:
        overrides = {"topic_prefix": f"bench-{run}.", "app_id": f"qx-bench-{run}",
                     "state_dir": state, "worker_id": "bench"}
        run_settings = settings.model_copy(update={**overrides, "state_dir": Path(state)})
        asyncio.run(create_topics(run_settings))
        try:
            asyncio.run(publish(run_settings, run_settings.topics.listings, listings))
            env = {f"QEXPLORER_{k.upper()}": v for k, v in overrides.items()}
            worker = spawn_worker(env, Path(state) / "worker.log")
            try:
                first_count, first_at = _wait_count(run_settings, lambda n: n > 0)
                _, done_at = _wait_count(run_settings, lambda n: n >= len(listings))
            finally:
                stop_worker(worker)
        finally:
            asyncio.run(delete_topics(run_settings))
    return (done_at - first_at) * len(listings) / max(1, len(listings) - first_count)


def _wait_count(settings: Settings, done: Callable[[int], bool],
                timeout_s: float = 600) -> tuple[int, float]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        count = 0
        if settings.index_dir.exists():
            try:
                count = ListingIndex.open(settings.index_dir, writable=False).count()
            except Exception:
                count = 0
        if done(count):
            return count, time.perf_counter()
        time.sleep(0.02)
    raise TimeoutError("the worker did not index the listings in time")


def _summary(seconds: list[float], size: int) -> dict:
    rates = [size / s for s in seconds]
    return {"listings_per_s_median": statistics.median(rates),
            "listings_per_s_min": min(rates), "listings_per_s_max": max(rates),
            "seconds": seconds}


def main() -> None:
    """Run the three measurements and write ``indexing.json`` and ``indexing.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--no-pipeline", action="store_true", help="skip the Kafka figure")
    args = parser.parse_args()

    items = generate_marketplace(n_benign=args.size, n_clusters=12, seed=1)[: args.size]
    listings = [ListingUpsert(**to_listing_dict(i)) for i in items]
    settings = Settings()
    runs: dict[str, list[float]] = {"raw_tantivy": [], "listing_index": [], "pipeline": []}
    for repeat in range(args.repeats):
        runs["raw_tantivy"].append(raw_tantivy(listings))
        runs["listing_index"].append(listing_index(listings))
        if not args.no_pipeline:
            runs["pipeline"].append(pipeline(listings, settings))
        print(f"repeat {repeat + 1}/{args.repeats}: "
              + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in runs.items() if v), flush=True)
    results = {name: _summary(s, len(listings)) for name, s in runs.items() if s}
    ceiling = results["raw_tantivy"]["listings_per_s_median"]
    for figures in results.values():
        figures["ratio_to_raw_tantivy"] = figures["listings_per_s_median"] / ceiling
    report = {"benchmark": "indexing", "size": len(listings), "repeats": args.repeats,
              "machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "tantivy": version("tantivy"), "cpus": len(os.sched_getaffinity(0))},
              "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "indexing.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    lines = ["| path | listings/s (median) | min-max | ratio to raw tantivy |", "|---|---|---|---|"]
    for name, f in results.items():
        lines.append(f"| {name} | {f['listings_per_s_median']:,.0f} | "
                     f"{f['listings_per_s_min']:,.0f}-{f['listings_per_s_max']:,.0f} | "
                     f"{f['ratio_to_raw_tantivy']:.2f} |")
    (args.out / "indexing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
