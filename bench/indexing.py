"""Indexing throughput of the pipeline against its raw ceilings, measured in one run.

Seven figures for the same synthetic listings, each repeated:

- ``raw_tantivy``: tantivy-py bulk indexing with its default tokenizer (the ceiling);
- ``raw_tantivy_analyzer``: the same with QExplorer's analyzer (what indexing the same texts
  the way search needs them costs tantivy itself: the analyzer's share of the gap);
- ``raw_tantivy_folded``: the same with QExplorer's whole analysis, disguise folding included
  (``search.folding`` run in the timed loop: the tokens of the normalised texts, variants,
  Chinese words and pinyin, in the index's fields, split on spaces by Tantivy): the ceiling
  with the same analysis;
- ``listing_index``: the project's index alone (its analysis, disguise folding, upsert-by-id,
  stored fields) through the search protocol (``SearchIndex.apply`` and ``commit``), opened as
  the worker opens its replica (``search.open_replica``: backend, writer heap and threads from
  the settings);
- ``listing_index_unfolded``: the same without disguise folding (``fold=False``: the index
  before it; its tokens still made by ``search.folding``);
- ``pipeline``: a real worker process consuming the ``listings`` topic from a real broker into
  its replica, from its first commit to the commit that holds every listing (worker start-up
  excluded, decoding, validation and commits included);
- ``folding`` and ``folding_reference``: the disguise folding and analysis alone (each
  listing's token fields, nothing indexed) as indexing runs them (``search.folding``:
  compiled, in batches of :data:`FOLD_BATCH`, the reference for what it hands back) and their
  reference in Python (``search.normalize.index_fields``), in the same run;
- ``raw_consumer``: a plain aiokafka consumer reading the same messages from the same topic
  and only ``orjson``-decoding them (the Kafka ceiling), with the replica's fetch settings and
  the same clock convention (from its first batch to its last, scaled to the whole set).

The listings are published once; each repeat starts a fresh worker (a new, empty replica).

Usage: ``.venv/bin/python -m bench.indexing --size 50000 --repeats 3 --out bench/results``.
It needs the broker (``qexplorer kafka start``, or KAFKA_BOOTSTRAP) for the Kafka figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import tantivy

from bench.common import (
    BenchCluster,
    as_changes,
    open_index,
    synthetic_listings,
    write_report,
)
from bench.report import comparison
from qexplorer.config import Settings
from qexplorer.kafka import clients
from qexplorer.kafka.io import publish, topic_partitions
from qexplorer.search.folding import index_listing, index_listings
from qexplorer.search.normalize import index_fields
from qexplorer.search.tantivy_index import (
    ANALYZER,
    TOKENS_ANALYZER,
    TantivyIndex,
    analyzer,
    tokens_analyzer,
)
from schemas.models import ListingUpsert
from schemas.topics import LISTINGS

PATHS = ("raw_tantivy", "raw_tantivy_analyzer", "raw_tantivy_folded", "listing_index",
         "listing_index_unfolded", "folding", "folding_reference", "pipeline", "raw_consumer")
#: Listings folded in one call, as a worker's fetched batch is.
FOLD_BATCH = 1_000


def raw_schema(tokenizer: str = "default", folded: bool = False) -> tantivy.Schema:
    """The raw ceiling's schema: id, title, description, the texts under ``tokenizer``; with
    ``folded`` the disguise folding's fields too (as the index has them)."""
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw")
    # folded, the text fields hold tokens made already, the text as written is stored apart
    text = TOKENS_ANALYZER if folded else tokenizer
    builder.add_text_field("title", stored=not folded, tokenizer_name=text)
    builder.add_text_field("description", stored=not folded, tokenizer_name=text)
    if folded:
        builder.add_bytes_field("original", stored=True, indexed=False)
        builder.add_text_field("variants", stored=False, tokenizer_name=TOKENS_ANALYZER)
        builder.add_text_field("words", stored=False, tokenizer_name=TOKENS_ANALYZER)
        builder.add_text_field("pinyin", stored=False, tokenizer_name=TOKENS_ANALYZER)
    return builder.build()


def build_raw_index(listings: list[ListingUpsert], path: Path) -> tantivy.Index:
    """Bulk index the listings' texts with tantivy-py alone into ``path``; merges finished."""
    path.mkdir(parents=True, exist_ok=True)
    index = tantivy.Index(raw_schema(), str(path))
    fill_raw_index(index, listings)
    return index


def fill_raw_index(index: tantivy.Index, listings: list[ListingUpsert]) -> None:
    """Add the listings to a raw index in one commit and wait for its merges."""
    writer = index.writer(128_000_000)
    for listing in listings:
        writer.add_document(tantivy.Document(id=listing.id, title=listing.title,
                                             description=listing.description))
    writer.commit()
    writer.wait_merging_threads()
    index.reload()


def fill_folded_index(index: tantivy.Index, listings: list[ListingUpsert]) -> None:
    """Add the listings to a raw index as the disguise folding has them (its analysis in the
    loop: ``search.folding``), in one commit, and wait for its merges."""
    writer = index.writer(128_000_000)
    for listing, fields in zip(listings, fold_batches(listings), strict=True):
        doc = tantivy.Document(id=listing.id, **fields)
        doc.add_bytes("original", orjson.dumps([listing.title, listing.description]))
        writer.add_document(doc)
    writer.commit()
    writer.wait_merging_threads()
    index.reload()


def raw_tantivy(listings: list[ListingUpsert], own_analyzer: bool = False,
                folded: bool = False) -> float:
    """Seconds for tantivy-py to bulk index the listings' texts (default tokenizer, or with
    ``own_analyzer`` QExplorer's; with ``folded`` also its disguise folding)."""
    with tempfile.TemporaryDirectory() as path:
        mine = own_analyzer or folded
        index = tantivy.Index(raw_schema(ANALYZER if mine else "default", folded), path)
        if mine:
            index.register_tokenizer(ANALYZER, analyzer())
            index.register_tokenizer(TOKENS_ANALYZER, tokens_analyzer())
        started = time.perf_counter()
        (fill_folded_index if folded else fill_raw_index)(index, listings)
        return time.perf_counter() - started


def listing_index(listings: list[ListingUpsert], settings: Settings | None = None,
                  fold: bool = True) -> float:
    """Seconds for the project's index to apply and commit the listings (given their
    messages, as the replica hands them over), through the search protocol; ``fold=False``
    without the disguise folding."""
    settings = settings or Settings()
    changes = as_changes(listings)  # as the replica receives them
    with tempfile.TemporaryDirectory() as path:
        started = time.perf_counter()
        index = open_index(Path(path), settings.index) if fold else TantivyIndex.open(
            Path(path) / "index", heap_mb=settings.index.writer_heap_mb,
            threads=settings.index.writer_threads, fold=False)
        index.apply(changes)
        index.commit({})
        index.close()
        return time.perf_counter() - started


def pipeline(cluster: BenchCluster, worker_id: str, size: int) -> float:
    """Seconds a new worker takes from its first index commit to holding all ``size``
    listings of the cluster's topic, scaled to the whole set (the listings in the first
    commit are not counted)."""
    cluster.start_worker(worker_id)
    try:
        reader = cluster.reader(worker_id)
        first_count, first_at = cluster.wait_count(worker_id, reader, lambda n: n > 0)
        _, done_at = cluster.wait_count(worker_id, reader, lambda n: n >= size)
    finally:
        cluster.stop_worker(worker_id)
    return (done_at - first_at) * size / max(1, size - first_count)


async def _consume(settings: Settings, topic: str, size: int, timeout_s: float) -> float:
    consumer = clients.reader(settings.kafka, max_records=settings.index.fetch_records)
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen, first_count, first_at = 0, 0, 0.0
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        while seen < size:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw consumer read {seen}/{size} in {timeout_s}s")
            batches = await consumer.getmany(timeout_ms=100,
                                             max_records=settings.index.fetch_records)
            for messages in batches.values():
                for message in messages:
                    orjson.loads(message.value)
                seen += len(messages)
            if seen and not first_count:
                first_count, first_at = seen, time.perf_counter()
        done_at = time.perf_counter()
    finally:
        await consumer.stop()
    if first_count >= size:  # one batch held everything: nothing to scale from
        return done_at - started
    return (done_at - first_at) * size / (size - first_count)


def raw_consumer(settings: Settings, topic: str, size: int, timeout_s: float = 300) -> float:
    """Seconds for a plain aiokafka consumer to read and orjson-decode ``size`` messages of
    ``topic`` (client start-up excluded; from its first batch, scaled to the whole set)."""
    return asyncio.run(_consume(settings, topic, size, timeout_s))


def fold_batches(listings: list[ListingUpsert]) -> list[dict[str, str]]:
    """The index's token fields of each listing, :data:`FOLD_BATCH` listings a call to
    ``search.folding``."""
    out: list[dict[str, str]] = []
    for start in range(0, len(listings), FOLD_BATCH):
        batch = listings[start:start + FOLD_BATCH]
        out.extend(index_listings([(x.title, x.description) for x in batch]))
    return out


def folding(listings: list[ListingUpsert], reference: bool = False) -> float:
    """Seconds to fold and analyse every listing's title and description as indexing does
    (:func:`fold_batches`), or with the Python ``reference``."""
    started = time.perf_counter()
    if reference:
        for listing in listings:
            index_fields(listing.title, listing.description)
    else:
        fold_batches(listings)
    return time.perf_counter() - started


def measure(listings: list[ListingUpsert], settings: Settings, repeats: int, log_dir: Path,
            kafka: bool = True, progress: Callable[[str], None] = print
            ) -> dict[str, list[float]]:
    """Seconds of each path per repeat (the Kafka paths only with ``kafka``)."""
    runs: dict[str, list[float]] = {name: [] for name in PATHS}
    index_listing("ｗａｒｍ up", "冰糖")  # load the folding's tables outside the clocks
    context = BenchCluster(settings, "indexing", log_dir) if kafka else contextlib.nullcontext()
    with context as cluster:
        if cluster is not None:
            asyncio.run(publish(cluster.settings.kafka, cluster.settings.topics, LISTINGS,
                                listings))
        for repeat in range(repeats):
            runs["raw_tantivy"].append(raw_tantivy(listings))
            runs["raw_tantivy_analyzer"].append(raw_tantivy(listings, own_analyzer=True))
            runs["raw_tantivy_folded"].append(raw_tantivy(listings, folded=True))
            runs["listing_index"].append(listing_index(listings, settings))
            runs["listing_index_unfolded"].append(listing_index(listings, settings, fold=False))
            runs["folding"].append(folding(listings))
            runs["folding_reference"].append(folding(listings, reference=True))
            if cluster is not None:
                runs["pipeline"].append(pipeline(cluster, f"r{repeat}", len(listings)))
                runs["raw_consumer"].append(raw_consumer(
                    cluster.settings, cluster.settings.topics.listings, len(listings)))
            progress(f"indexing repeat {repeat + 1}/{repeats}: "
                     + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in runs.items() if v))
    return {name: seconds for name, seconds in runs.items() if seconds}


def _summary(seconds: list[float], size: int) -> dict:
    rates = [size / s for s in seconds]
    return {"listings_per_s_median": statistics.median(rates),
            "listings_per_s_min": min(rates), "listings_per_s_max": max(rates),
            "seconds": seconds}


def summarise(runs: dict[str, list[float]], size: int) -> dict[str, dict]:
    """Rates per path with their ratios to the raw ceilings (where measured)."""
    results = {name: _summary(s, size) for name, s in runs.items()}
    for ceiling in ("raw_tantivy", "raw_tantivy_analyzer", "raw_tantivy_folded",
                    "listing_index_unfolded", "folding_reference", "raw_consumer"):
        if ceiling in results:
            base = results[ceiling]["listings_per_s_median"]
            for figures in results.values():
                figures[f"ratio_to_{ceiling}"] = figures["listings_per_s_median"] / base
    return results


def rows(runs: dict[str, list[float]], size: int) -> list[dict]:
    """The aggregate report's rows: the pipeline against each ceiling, the index alone
    against raw tantivy."""
    rate = {name: [size / s for s in seconds] for name, seconds in runs.items()}
    alone = "listing_index: the project's index alone (SearchIndex.apply), listings/s"
    before = "listing_index_unfolded: the same without disguise folding, listings/s"
    out = [comparison("indexing", alone, "/s", rate["listing_index"],
                      ceiling=rate["raw_tantivy"], ceiling_name="raw_tantivy"),
           comparison("indexing", alone, "/s", rate["listing_index"],
                      ceiling=rate["raw_tantivy_folded"],
                      ceiling_name="raw_tantivy with QExplorer's analysis, folding included"),
           comparison("indexing", alone, "/s", rate["listing_index"],
                      ceiling=rate["listing_index_unfolded"],
                      ceiling_name="the index without disguise folding (its cost)"),
           comparison("indexing", before, "/s", rate["listing_index_unfolded"],
                      ceiling=rate["raw_tantivy_analyzer"],
                      ceiling_name="raw_tantivy with QExplorer's analyzer"),
           comparison("indexing", "folding alone (search.folding, compiled), listings/s", "/s",
                      rate["folding"], ceiling=rate["folding_reference"],
                      ceiling_name="its Python reference (search.normalize.index_fields)")]
    if "pipeline" in rate:
        metric = "pipeline: Kafka to searchable index (worker), listings/s"
        out.append(comparison("indexing", metric, "/s", rate["pipeline"],
                              ceiling=rate["raw_tantivy"], ceiling_name="raw_tantivy"))
        out.append(comparison("indexing", metric, "/s", rate["pipeline"],
                              ceiling=rate["raw_tantivy_analyzer"],
                              ceiling_name="raw_tantivy with QExplorer's analyzer"))
        out.append(comparison("indexing", metric, "/s", rate["pipeline"],
                              ceiling=rate["raw_consumer"],
                              ceiling_name="raw_consumer (aiokafka + orjson)"))
    return out


def run(settings: Settings, *, size: int, repeats: int, log_dir: Path,
        progress: Callable[[str], None] = print) -> dict:
    """The indexing benchmark for the aggregate report (``bench.run``)."""
    listings = synthetic_listings(size)
    runs = measure(listings, settings, repeats, log_dir, progress=progress)
    results = summarise(runs, len(listings))
    return {"params": {"size": len(listings), "repeats": repeats,
                       "search_backend": settings.index.backend,
                       "index_writer_threads": settings.index.writer_threads,
                       "index_writer_heap_mb": settings.index.writer_heap_mb,
                       "index_commit_docs": settings.index.commit_docs,
                       "index_fetch_records": settings.index.fetch_records},
            "rows": rows(runs, len(listings)), "details": results,
            "notes": [f"{len(listings):,} synthetic listings published once; each repeat a new "
                      "worker (empty replica), clocked from its first index commit to the one "
                      "holding every listing, scaled to the whole set",
                      "raw_consumer: same topic, replica's fetch settings, reads and "
                      "orjson-decodes only, same clock convention"]}


def markdown(results: dict[str, dict]) -> str:
    """The standalone report as a Markdown table."""
    ceilings = ("raw_tantivy", "raw_tantivy_analyzer", "raw_tantivy_folded",
                "folding_reference", "raw_consumer")
    lines = ["| path | listings/s (median) | min-max | ratio to raw tantivy | ratio to raw "
             "tantivy, QExplorer's analyzer | ratio to raw tantivy, its analysis with folding "
             "| ratio to the Python folding | ratio to raw consumer |",
             "|---|---|---|---|---|---|---|---|"]
    for name, f in results.items():
        ratios = [f.get(f"ratio_to_{c}") for c in ceilings]
        lines.append(f"| {name} | {f['listings_per_s_median']:,.0f} | "
                     f"{f['listings_per_s_min']:,.0f}-{f['listings_per_s_max']:,.0f} | "
                     + " | ".join("-" if r is None else f"{r:.2f}" for r in ratios) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the measurements and write ``indexing.json`` and ``indexing.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--no-pipeline", action="store_true", help="skip the Kafka figures")
    args = parser.parse_args()

    started = time.time()
    listings = synthetic_listings(args.size)
    settings = Settings()
    runs = measure(listings, settings, args.repeats, args.out / "logs",
                   kafka=not args.no_pipeline)
    results = summarise(runs, len(listings))
    write_report(args.out, "indexing", {
        "benchmark": "indexing", "size": len(listings), "repeats": args.repeats,
        "results": results}, started=started, render=lambda report: markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
