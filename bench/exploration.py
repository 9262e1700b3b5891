"""Exploration: seeds/s and seed-to-feedback latency through a real worker, and the search
fan-out's queries/s against raw tantivy-py, measured in one run.

A worker (``keywords`` extractor by default: no model, so the figure is the pipeline's own)
indexes ``size`` synthetic listings; then, per repeat, confirmed toxic items ("seeds", texts
of the marketplace's toxic clusters under fresh ids) are published to ``toxic-items``:

- **steady**: ``steady_rate`` seeds/s (5/s: moderators confirming items) for ``steady_s``;
- **burst**: ``burst`` seeds at once (a moderation backlog released).

Latency of a seed = the broker timestamp of its last ``search-feedback`` record - the broker
timestamp of its ``toxic-items`` record (both CreateTime, read back from Kafka; the worker
awaits every output before a seed counts as explored). Seeds/s of a phase = seeds / (last
feedback - first seed). The ceiling of seeds/s is the same extractor alone in this process
in batches of the worker's size (what exploration could reach if Kafka, index waits, search
and emitting cost nothing).

The fan-out figure replays the query strings the worker actually ran (read from
``search-feedback``) against the worker's own index, reopened as the worker opens it
(``search.open_replica``) after it stopped: ``agents.explorer.fan_out`` (``SearchIndex.
search_many`` a seed) in batches of the worker's size on a ThreadPoolExecutor of its
``search_threads``, from an event loop with ``sys.setswitchinterval`` as ``streams/app.py``
sets it (the explorer's search path), against tantivy-py (the fastest of 1 and that many
threads, each looping over its share): on the worker's index with the very queries the
pipeline runs (``TantivyIndex.parsed``: escaped, folded, with the folded clauses, built
beforehand) plus fetching the stored documents of the hits, which the explorer needs (the
search without QExplorer's Python around it); and ``searcher.search(index.parse_query(t), N)``
with ``t = to_search_text(q)`` on a raw index of the same listings with the default tokenizer,
with and without the fetch (what QExplorer's analysis and folding cost). The sides take turns
in :data:`FANOUT_TURNS` shares of the queries, so a change in the machine's load falls on all.

``--model DIR`` adds the same phases with ``QEXPLORER_EXTRACTOR=transformers`` on that model;
``--keywords-method M`` with a keywords worker running method ``M`` (``probe``: up to 200
searches of the worker's own index a seed before its queries).

Usage: ``.venv/bin/python -m bench.exploration --repeats 3 --out .cache/bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import tantivy
from aiokafka import AIOKafkaProducer

from agents.explorer import fan_out
from agents.extractor.base import SeedText
from agents.extractor.keywords import NEEDS_TOXIC
from agents.extractor.priors import TermCounts, WithToxic
from agents.extractor.registry import build_extractor
from bench.common import (
    BenchCluster,
    as_listings,
    free_port,
    open_index,
    scrape,
    synthetic_items,
    write_report,
)
from bench.indexing import build_raw_index
from bench.report import comparison, latency_summary, markdown
from qexplorer.config import KafkaSettings, Settings
from qexplorer.kafka import clients
from qexplorer.kafka.io import follow, publish, read_to_end
from qexplorer.marketplace.items import LabelledItem, to_toxic_dict
from qexplorer.search.protocol import SearchIndex, TermStats
from qexplorer.search.query import to_search_text
from qexplorer.search.tantivy_index import TantivyIndex
from schemas.codec import encode
from schemas.models import ListingUpsert, ToxicItem
from schemas.topics import LISTINGS, TOXIC_ITEMS
from streams.app import SWITCH_INTERVAL_S

SIZE = 20_000
STEADY_RATE = 5.0
STEADY_S = 10.0
BURST = 200
FANOUT_QUERIES = 8_000
#: The fan-out's sides take turns in this many shares of the queries a repeat.
FANOUT_TURNS = 8
STALL_S = 20.0


def seeds_from(harmful: Sequence[LabelledItem], n: int, tag: str) -> list[ToxicItem]:
    """``n`` confirmed toxic items cycling through the harmful items' texts, each under a new
    id (an id already explored by this model version would be skipped)."""
    out = []
    for k in range(n):
        item = harmful[k % len(harmful)]
        out.append(ToxicItem(**{**to_toxic_dict(item, "bench"), "id": f"{item.id}.{tag}{k}"}))
    return out


def phase_figures(seed_ts: dict[str, float], feedback_ts: dict[str, list[float]],
                  seeds: Sequence[str]) -> dict:
    """Seeds/s and seed-to-feedback latencies of one phase from broker timestamps (seconds):
    ``seed_ts`` per seed id, ``feedback_ts`` every feedback record's time per seed id."""
    done = [s for s in seeds if s in seed_ts and feedback_ts.get(s)]
    latencies = [max(feedback_ts[s]) - seed_ts[s] for s in done]
    figures = {"seeds": len(seeds), "explored": len(done), "latency": latency_summary(latencies),
               "seeds_per_s": None}
    if done:
        span = max(max(feedback_ts[s]) for s in done) - min(seed_ts[s] for s in done)
        figures["seeds_per_s"] = len(done) / span if span > 0 else None
    return figures


class FeedbackFollower:
    """Follows ``search-feedback`` from the beginning: which seeds have feedback so far."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self.seen: set[str] = set()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Start following in the background."""
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        async for message in follow(self.kafka, self.topic, from_beginning=True):
            self.seen.add(orjson.loads(message.value)["seed_id"])

    async def wait(self, seeds: set[str], stall_s: float, check: Callable[[], None]) -> None:
        """Until every seed has feedback, or nothing new arrived for ``stall_s``."""
        last_progress, last_count = time.monotonic(), -1
        while not seeds <= self.seen:
            count = len(seeds & self.seen)
            if count != last_count:
                last_progress, last_count = time.monotonic(), count
            elif time.monotonic() - last_progress > stall_s:
                return
            check()
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _publish(producer: AIOKafkaProducer, topic: str, seeds: Sequence[ToxicItem],
                   rate: float | None) -> None:
    started = time.perf_counter()
    futures = []
    for k, seed in enumerate(seeds):
        if rate:
            await asyncio.sleep(max(0.0, started + k / rate - time.perf_counter()))
        futures.append(await producer.send(topic, key=TOXIC_ITEMS.key(seed).encode(),
                                           value=encode(seed)))
    await asyncio.gather(*futures)


async def _phases(cluster: BenchCluster, plan: Sequence[tuple[str, float | None,
                                                              list[ToxicItem]]],
                  progress: Callable[[str], None]) -> tuple[dict, dict, list[tuple[str, str]]]:
    """Publish each phase's seeds and wait for their feedback; then read both topics back.
    Returns seed timestamps, feedback timestamps per seed, and (query, seed id) pairs."""
    settings = cluster.settings
    topics = settings.topics
    follower = FeedbackFollower(settings.kafka, topics.feedback)
    await follower.start()
    producer = clients.producer(settings.kafka)
    await producer.start()
    try:
        for name, rate, seeds in plan:
            started = time.perf_counter()
            await _publish(producer, topics.toxic_items, seeds, rate)
            await follower.wait({s.id for s in seeds},
                                STALL_S if name != "warm-up" else 180.0,
                                lambda: cluster.check_alive("w"))
            progress(f"exploration {name}: {len(seeds)} seeds in "
                     f"{time.perf_counter() - started:.1f}s")
        await asyncio.sleep(1.0)  # the last seeds' remaining feedback records
    finally:
        await producer.stop()
        await follower.stop()
    seed_ts = {m.key.decode(): m.timestamp / 1000
               for m in await read_to_end(settings.kafka, topics.toxic_items)}
    feedback_ts: dict[str, list[float]] = defaultdict(list)
    queries: list[tuple[str, str]] = []
    for m in await read_to_end(settings.kafka, topics.feedback, timeout_s=60):
        record = orjson.loads(m.value)
        feedback_ts[record["seed_id"]].append(m.timestamp / 1000)
        queries.append((record["query"], record["seed_id"]))
    return seed_ts, feedback_ts, queries


def worker_metrics(samples: dict[str, float]) -> dict:
    """What the worker's own /metrics say about the whole run (warm-up, steady and burst
    phases): batches extracted and mean time per stage sample, seeds, queries, detections."""
    out: dict = {}
    for stage in ("extract", "seed_to_detection"):
        count = samples.get(f'qexplorer_latency_seconds_count{{stage="{stage}"}}')
        total = samples.get(f'qexplorer_latency_seconds_sum{{stage="{stage}"}}')
        if count:
            out[stage] = {"count": int(count), "mean_ms": 1000 * (total or 0.0) / count}
    for name in ("seeds_explored", "queries", "detections", "dead_letters"):
        found = [v for k, v in samples.items() if k.startswith(f"qexplorer_{name}_total")]
        if found:
            out[name] = int(sum(found))
    return out


def _extractor_alone(settings: Settings, stats: TermStats, seeds: Sequence[ToxicItem]) -> float:
    """Seeds/s of the worker's extractor in this process (loaded and warmed up first), in
    batches of the worker's ``explore_batch`` one after the other, as the worker calls it
    (``stats``: the worker's index, as the worker gives it to the extractor)."""
    texts = [SeedText(s.id, s.title, s.description) for s in seeds]
    if settings.extractor.backend == "keywords" and settings.extractor.model in NEEDS_TOXIC:
        # the worker's ledger would hold these seeds by the time it explores them
        stats = WithToxic(stats, TermCounts(texts))
    extractor = build_extractor(settings.extractor, stats)
    size, k = settings.exploration.batch, settings.exploration.queries_per_seed

    async def timed() -> float:
        await extractor.extract(texts[:2], k)  # loads a model
        started = time.perf_counter()
        for at in range(0, len(texts), size):
            await extractor.extract(texts[at:at + size], k)
        seconds = time.perf_counter() - started
        await extractor.aclose()
        return seconds

    return len(texts) / asyncio.run(timed())


def explore(settings: Settings, listings: list[ListingUpsert], harmful: list[LabelledItem], *,
            repeats: int, log_dir: Path, label: str, steady_rate: float, steady_s: float,
            burst: int, progress: Callable[[str], None],
            extractor: dict[str, object]) -> dict:
    """One worker's phases: per repeat a steady stream then a burst of seeds. Returns the
    figures per phase, the extractor-alone ceiling per repeat and the fan-out figures (on
    this worker's index, after it stopped). ``extractor``: the worker's extractor settings
    (``{"backend": "keywords"}``)."""
    steady_n = max(1, round(steady_rate * steady_s))
    plan: list[tuple[str, float | None, list[ToxicItem]]] = [
        ("warm-up", None, seeds_from(harmful, 1, "warm"))]
    for r in range(repeats):
        plan.append((f"steady {r + 1}", steady_rate, seeds_from(harmful, steady_n, f"s{r}-")))
        plan.append((f"burst {r + 1}", None, seeds_from(harmful, burst, f"b{r}-")))
    cluster = BenchCluster(settings, f"explore-{label}", log_dir,
                           metrics={"port": free_port()}, extractor=extractor)
    with cluster:
        worker_settings = cluster.worker_settings("w")
        asyncio.run(publish(cluster.settings.kafka, cluster.settings.topics, LISTINGS,
                            listings))
        cluster.start_worker("w")
        reader = cluster.reader("w")
        cluster.wait_count("w", reader, lambda n: n >= len(listings), timeout_s=300)
        seed_ts, feedback_ts, queries = asyncio.run(_phases(cluster, plan, progress))
        metrics = worker_metrics(scrape(worker_settings.metrics.host,
                                        worker_settings.metrics.port))
        cluster.stop_worker("w")
        if not queries:
            raise RuntimeError(f"no search feedback came back:\n"
                               f"{cluster.log('w', 3000)}")
        phases: dict[str, list[dict]] = {"steady": [], "burst": []}
        for name, _, seeds in plan[1:]:
            phases[name.split()[0]].append(
                phase_figures(seed_ts, feedback_ts, [s.id for s in seeds]))
        # the worker's index, reopened as the worker opens it (it stopped: its writer is free)
        index = open_index(worker_settings.worker_dir(), worker_settings.index)
        try:
            ceiling = [_extractor_alone(worker_settings, index, plan[2 + 2 * r][2])
                       for r in range(repeats)]
            fanout = fanout_searches(worker_settings, index, cluster.index_dir("w"), listings,
                                     queries, repeats)
        finally:
            index.close()
    exploration = worker_settings.exploration
    return {"phases": phases, "extractor_alone_seeds_per_s": ceiling, "fanout": fanout,
            "worker_metrics": metrics,
            "worker": {"extractor": worker_settings.extractor.backend,
                       "model": worker_settings.extractor.model,
                       "explore_batch": exploration.batch,
                       "explore_batch_within_s": exploration.batch_within_s,
                       "queries_per_seed": exploration.queries_per_seed,
                       "results_per_query": exploration.results_per_query,
                       "search_threads": exploration.search_threads}}


# --- the search fan-out ----------------------------------------------------------------------


def pipeline_searches(index: SearchIndex, queries: Sequence[tuple[str, str]], threads: int,
                      limit: int, batch: int) -> float:
    """Seconds for the explorer's search path to run every query (see the module docstring):
    a seed's queries are the consecutive pairs with its id, and ``batch`` seeds at a time go
    through ``agents.explorer.fan_out``, as the explorer searches a batch."""
    seeds = [(seed, [q for q, _ in group])
             for seed, group in itertools.groupby(queries, key=lambda pair: pair[1])]
    previous = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="search") as pool:
            async def run_batches() -> float:
                started = time.perf_counter()
                for i in range(0, len(seeds), batch):
                    await fan_out(pool, threads, index, seeds[i:i + batch], limit)
                return time.perf_counter() - started

            return asyncio.run(run_batches())
    finally:
        sys.setswitchinterval(previous)


def _raw_searches(index: tantivy.Index, queries: Sequence[str], threads: int, limit: int,
                  fetch: bool) -> float:
    """Seconds for tantivy-py alone to run every query (and, with ``fetch``, to load the
    stored documents of the hits and read their ids: the least a consumer of the results
    does), the fastest of 1 thread and ``threads`` threads, each thread looping over its share
    (no hand-off a query: that alone halves the rate on 2 cores)."""

    def share(part: Sequence[str]) -> None:
        searcher = index.searcher()
        fields = ["title", "description"]
        for query in part:
            hits = searcher.search(index.parse_query(query, fields), limit).hits
            if fetch:
                for _, address in hits:
                    searcher.doc(address).get_first("id")

    best = float("inf")
    for n in sorted({1, threads}):
        with ThreadPoolExecutor(n) as pool:
            started = time.perf_counter()
            list(pool.map(share, [queries[i::n] for i in range(n)]))
            best = min(best, time.perf_counter() - started)
    return best


def _parsed_searches(index: TantivyIndex, parsed: Sequence[tantivy.Query], threads: int,
                     limit: int) -> float:
    """Seconds for tantivy-py to run the pipeline's own parsed queries (``parsed``, built
    beforehand by :meth:`TantivyIndex.parsed`) on the worker's index and read each hit's
    stored id: the search with none of QExplorer's Python around it (escaping, folding,
    building the query, the hits). The fastest of 1 and ``threads`` threads, as
    :func:`_raw_searches`."""
    raw = index.tantivy_index

    def share(part: Sequence[tantivy.Query]) -> None:
        searcher = raw.searcher()
        for query in part:
            for _, address in searcher.search(query, limit).hits:
                searcher.doc(address).get_first("id")

    best = float("inf")
    for n in sorted({1, threads}):
        with ThreadPoolExecutor(n) as pool:
            started = time.perf_counter()
            list(pool.map(share, [parsed[i::n] for i in range(n)]))
            best = min(best, time.perf_counter() - started)
    return best


def fanout_searches(settings: Settings, index: SearchIndex, index_dir: Path,
                    listings: list[ListingUpsert], queries: Sequence[tuple[str, str]],
                    repeats: int) -> dict:
    """Queries/s of the explorer's search path on the worker's index (``index``, through the
    search protocol) against raw tantivy-py, same query texts (as ``to_search_text`` makes
    them for the parser), same threads, per repeat: on the worker's own index files
    (``index_dir``: same analysis, with the stored-document fetch the explorer needs), and on
    a raw index of the same listings with the default tokenizer (search alone, and with the
    fetch)."""
    exploration = settings.exploration
    threads, limit = exploration.search_threads, exploration.results_per_query
    batch = exploration.batch
    with tempfile.TemporaryDirectory() as tmp:
        raw = build_raw_index(listings, Path(tmp) / "raw")
        usable = []
        for query, seed in queries:
            text = to_search_text(query)
            try:
                raw.parse_query(text, ["title", "description"])
            except ValueError:
                continue
            if text:
                usable.append((query, seed, text))
        unparsable = len(queries) - len(usable)
        usable = [usable[k % len(usable)] for k in range(FANOUT_QUERIES)]
        pairs = [(q, s) for q, s, _ in usable]
        texts = [t for _, _, t in usable]
        # the ceiling on the same files and the same parsed queries: tantivy-py itself
        same = TantivyIndex.open(index_dir, writable=False)
        parsed = [same.parsed(q) for q, _ in pairs]
        # the same path with no parsed query kept: every search escapes, folds and parses
        cold = TantivyIndex.open(index_dir, writable=False, parsed_queries=0)
        pipeline_searches(index, pairs[:200], threads, limit, batch)  # warm the caches, every side
        _raw_searches(raw, texts[:200], threads, limit, fetch=True)
        _parsed_searches(same, [p for p in parsed[:200] if p is not None], threads, limit)
        runs: dict[str, list[float]] = {"pipeline": [], "raw_same_parsed_fetch": [], "raw": [],
                                        "raw_fetch": [], "pipeline_one_thread": [],
                                        "raw_same_parsed_fetch_one_thread": [],
                                        "pipeline_parsing_each": []}
        size = -(-len(pairs) // FANOUT_TURNS)
        for _ in range(repeats):
            seconds = dict.fromkeys(runs, 0.0)
            # the sides take turns a share at a time: a change in the machine's load (other
            # processes on a busy machine) falls on every side, not on one
            for at in range(0, len(pairs), size):
                share = slice(at, at + size)
                seconds["pipeline"] += pipeline_searches(index, pairs[share], threads, limit,
                                                         batch)
                seconds["raw_same_parsed_fetch"] += _parsed_searches(
                    same, [p for p in parsed[share] if p is not None], threads, limit)
                seconds["pipeline_parsing_each"] += pipeline_searches(cold, pairs[share],
                                                                      threads, limit, batch)
                seconds["raw"] += _raw_searches(raw, texts[share], threads, limit, False)
                seconds["raw_fetch"] += _raw_searches(raw, texts[share], threads, limit, True)
                # one thread a side: a second core being free or not (a busy machine) moves
                # the two-thread ratio between runs; one core each, it moves less
                seconds["pipeline_one_thread"] += pipeline_searches(index, pairs[share], 1,
                                                                    limit, batch)
                seconds["raw_same_parsed_fetch_one_thread"] += _parsed_searches(
                    same, [p for p in parsed[share] if p is not None], 1, limit)
            for side, taken in seconds.items():
                runs[side].append(len(usable) / taken)
    return {"queries_per_s": runs, "queries": len(usable),
            "distinct_queries": len(set(texts)), "unparsable_raw": unparsable,
            "threads": threads, "limit": limit,
            "switch_interval_s": {"pipeline": SWITCH_INTERVAL_S,
                                  "raw": sys.getswitchinterval()}}


# --- the benchmark ---------------------------------------------------------------------------


def _rows(result: dict, label: str, steady_rate: float, burst: int) -> list[dict]:
    phases = result["phases"]
    rows = []
    bursts = [p for p in phases["burst"] if p["seeds_per_s"]]
    if bursts:
        rows.append(comparison(
            "exploration", f"{label}: burst of {burst} seeds, seeds/s", "/s",
            [p["seeds_per_s"] for p in bursts],
            ceiling=result["extractor_alone_seeds_per_s"][:len(bursts)],
            ceiling_name="extractor alone, in-process"))
    for kind, title in (("steady", f"steady {steady_rate:g} seeds/s"),
                        ("burst", f"burst of {burst}")):
        done = [p for p in phases[kind] if p["latency"]["n"]]
        for q in ("p50", "p95"):
            if done:
                rows.append(comparison(
                    "exploration", f"{label}: {title}, seed to feedback {q}", "ms",
                    [p["latency"][f"{q}_ms"] for p in done], better="lower"))
    return rows


def run(settings: Settings, *, size: int, repeats: int, log_dir: Path, model: str | None = None,
        steady_rate: float = STEADY_RATE, steady_s: float = STEADY_S, burst: int = BURST,
        methods: Sequence[str] = (), progress: Callable[[str], None] = print) -> dict:
    """The exploration benchmark for the aggregate report (``bench.run``); ``methods`` adds
    a worker per keywords method named (e.g. ``probe``, whose queries cost searches)."""
    items = synthetic_items(size, seed=3)
    listings = as_listings(items)
    harmful = [i for i in items if i.harmful]
    common = {"repeats": repeats, "log_dir": log_dir, "steady_rate": steady_rate,
              "steady_s": steady_s, "burst": burst, "progress": progress}
    keywords = explore(settings, listings, harmful, label="keywords",
                       extractor={"backend": "keywords"}, **common)
    rows = _rows(keywords, "keywords", steady_rate, burst)
    fanout = keywords["fanout"]
    rates = fanout["queries_per_s"]
    metric = (f"search fan-out (SearchIndex.search_many, {fanout['threads']} threads), "
              "queries/s")
    rows.append(comparison("exploration", metric, "/s", rates["pipeline"],
                           ceiling=rates["raw_same_parsed_fetch"],
                           ceiling_name="raw tantivy-py on the worker's index, the same parsed "
                                        "queries, search + doc fetch"))
    rows.append(comparison("exploration", "search fan-out, every query parsed anew (no parsed "
                           "query kept), queries/s", "/s", rates["pipeline_parsing_each"],
                           ceiling=rates["raw_same_parsed_fetch"],
                           ceiling_name="raw tantivy-py on the worker's index, the same parsed "
                                        "queries, search + doc fetch"))
    rows.append(comparison("exploration", "search fan-out on one thread, queries/s", "/s",
                           rates["pipeline_one_thread"],
                           ceiling=rates["raw_same_parsed_fetch_one_thread"],
                           ceiling_name="raw tantivy-py on one thread, the same parsed queries, "
                                        "search + doc fetch"))
    rows.append(comparison("exploration", metric, "/s", rates["pipeline"], ceiling=rates["raw"],
                           ceiling_name="raw tantivy-py search, default tokenizer"))
    rows.append(comparison("exploration", metric, "/s", rates["pipeline"],
                           ceiling=rates["raw_fetch"],
                           ceiling_name="raw tantivy-py search + doc fetch, default tokenizer"))
    details = {"keywords": keywords}
    for method in methods:
        label = f"keywords-{method}"
        details[label] = explore(settings, listings, harmful, label=label,
                                 extractor={"backend": "keywords", "model": method}, **common)
        rows += _rows(details[label], label, steady_rate, burst)
    if model:
        with_model = explore(settings, listings, harmful, label="transformers",
                             extractor={"backend": "transformers", "model": model}, **common)
        rows += _rows(with_model, "transformers", steady_rate, burst)
        details["transformers"] = with_model
    notes = []
    for label, result in details.items():
        steady = result["phases"]["steady"]
        achieved = [p["seeds_per_s"] for p in steady if p["seeds_per_s"]]
        missing = sum(p["seeds"] - p["explored"] for kind in result["phases"].values()
                      for p in kind)
        w = result["worker"]
        notes.append(
            f"{label}: {len(listings):,} listings indexed first; per repeat "
            f"{steady[0]['seeds'] if steady else 0} seeds at {steady_rate:g}/s (achieved "
            f"{statistics.median(achieved) if achieved else 0:.2f}/s) then {burst} at once; "
            f"batch {w['explore_batch']} within {w['explore_batch_within_s']} s, K="
            f"{w['queries_per_seed']}, N={w['results_per_query']}"
            + (f"; {missing} seeds without feedback" if missing else ""))
        m = result["worker_metrics"]
        if "extract" in m:
            notes.append(
                f"{label}, the worker's /metrics over all phases: {m['extract']['count']} "
                f"batches, extraction {m['extract']['mean_ms']:.1f} ms per batch on average; "
                f"{m.get('seeds_explored', 0)} seeds, {m.get('queries', 0)} queries, "
                f"{m.get('detections', 0)} detections"
                + (f"; seed_to_detection mean {m['seed_to_detection']['mean_ms']:.0f} ms"
                   if "seed_to_detection" in m else ""))
    notes.append(f"fan-out: the {fanout['distinct_queries']:,} distinct query texts of the "
                 f"queries the worker ran, cycled to {fanout['queries']:,} searches per repeat "
                 f"and side, the sides taking turns in {FANOUT_TURNS} shares "
                 f"({fanout['unparsable_raw']} empty or refused by the default "
                 f"parser left out), so after the first pass the pipeline's index holds each "
                 f"query parsed (index.parsed_queries), as it does for a standing query or a "
                 f"query many seeds share; the 'parsed anew' row keeps none (a query never "
                 f"searched before); the worker's-index ceiling runs the pipeline's own parsed "
                 f"queries, the default-tokenizer sides parse the same text (to_search_text); "
                 f"pipeline side at switch interval "
                 f"{fanout['switch_interval_s']['pipeline'] * 1000:g} ms as streams/app.py "
                 f"sets it, raw sides at the default "
                 f"{fanout['switch_interval_s']['raw'] * 1000:g} ms; the default-tokenizer "
                 "index holds the same listings' id, title and description")
    return {"params": {"size": len(listings), "repeats": repeats, "steady_rate": steady_rate,
                       "steady_s": steady_s, "burst": burst, "model": model},
            "rows": rows, "notes": notes, "details": details}


def main() -> None:
    """Run the exploration benchmark alone; write ``exploration.json`` and ``.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="also run with the transformers extractor on DIR")
    parser.add_argument("--keywords-method", action="append", default=[],
                        help="also run a keywords worker with this method (repeatable)")
    parser.add_argument("--out", type=Path, default=Path(".cache/bench"))
    args = parser.parse_args()
    started = time.time()
    section = run(Settings(), size=args.size, repeats=args.repeats,
                  log_dir=args.out / "logs", model=args.model, methods=args.keywords_method)
    report = write_report(args.out, "exploration", {
        "params": {"size": args.size, "repeats": args.repeats,
                   "keywords_methods": args.keywords_method},
        "benchmarks": {"exploration": section}}, started=started, render=markdown)
    print(markdown(report))


if __name__ == "__main__":
    main()
