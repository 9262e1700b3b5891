"""Standing queries: how many new listings a second a worker matches against 1,000, 10,000
and 100,000 standing queries, against the same engine's raw ceiling and against the other
design (a small in-memory index of each batch), and what the matching costs indexing.

One index of ``size`` synthetic listings (100,000), opened as the worker opens its replica
(``search.open_replica``), each listing applied with its Kafka position (``Change.position``;
the ``k``-th listing at partition ``k % P`` of the topic's ``P`` partitions). The standing
queries are 1-3 word spans of another marketplace's texts (Han runs cut into two-character
words, spans that start or end with an English stopword left out, as the keywords extractor
leaves them), fixed seed: ``seed`` queries are spans of its toxic items (what explored seeds
are; their code words and handles are rare), ``generic`` queries spans of any listing (common
words: a pessimistic mix). Per repeat, for each set of queries and each batch size (2,000
listings, the watcher's ``QEXPLORER_STANDING_BATCH``, and 200), a new batch of listings is
applied and committed with its positions (the replica's work, not timed), then matched by:

- **watcher** (the pipeline): ``agents.watcher.Watcher.handle`` on the batch's messages, with
  the worker's search threads and GIL switch interval, a replica stub whose index is the real
  one and always caught up, and a no-op producer: ``SearchIndex.search_arrivals`` (each query
  parsed, filtered to the batch's ``kafka_pos`` ranges, scored on the whole index, every
  listing of the batch it scores at least its ``min_score``, the ones below not fetched) in
  contiguous shares on the threads, each hit made a detection (encoded, not sent);
- **raw** (the ceiling): tantivy-py alone on the same index and threads, each thread looping
  over its share: ``searcher.search(q, batch)`` of the same queries as the index searches
  them (``TantivyIndex.parsed``: folded clauses included) combined with the same filter
  before the clock starts, scores compared with ``min_score``, no document fetch;
- **memory batch index** (the alternative design): ``search.memory_index()`` filled with the
  batch and committed, then ``search_many(queries, batch)`` of every query in shares on the
  same threads.
  Its scores come from the batch's statistics alone, so no ``min_score`` from the whole index
  applies: it is compared for speed only.

A listing rate is the batch's listings over the seconds its matching took. ``min_score`` of a
query is what the explorer would give it (``agents.standing.standing_queries``): the score of
its 10th result over the whole index, 0 when it had fewer; it comes from the same repeat's
unfiltered top-N search of the queries (``SearchIndex.search_many`` in shares on the threads,
against raw ``searcher.search``), also reported for context, as is the filter's own cost (a
search of the batch filter alone). 100,000 queries take too long to run on every path every
repeat: each repeat times a different random 5,000 of them and scales the seconds
linearly to all of them (those figures are marked "extrapolated").

Last, the indexing rate (``SearchIndex.apply`` of ``fetch_records`` listings at a time, a
commit every ``commit_interval_s`` or ``commit_docs``, as the replica does) alone and while a
thread runs the watcher on the 10,000 seed queries continuously (a 2,000-listing batch, over
and over), on the same index in the same process, alternating which runs first.

Usage: ``.venv/bin/python -m bench.standing --repeats 3 --out .cache/bench-standing``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import tantivy

from agents.explore import Ledger
from agents.explorer import RawMessage
from agents.extractor.priors import STOPWORDS
from agents.standing import StandingBook
from agents.watcher import Watcher, arrivals_of
from bench.common import (
    as_listings,
    open_index,
    renamed,
    synthetic_items,
    synthetic_listings,
    write_report,
)
from bench.report import comparison, markdown
from qexplorer.config import Settings
from qexplorer.search import memory_index
from qexplorer.search.protocol import Arrivals, Change, SearchIndex
from qexplorer.search.query import to_search_text
from qexplorer.search.tantivy_index import TantivyIndex, position_of
from schemas.codec import encode
from schemas.models import ListingUpsert, StandingQuery, query_id
from streams.app import SWITCH_INTERVAL_S

SIZE = 100_000
BATCHES = (2_000, 200)


@dataclass(frozen=True)
class Case:
    """A set of standing queries and the batch sizes matched against it: ``workload`` is
    ``seed`` (spans of the marketplace's toxic items: what explored seeds are) or ``generic``
    (spans of any listing)."""

    workload: str
    queries: int
    batches: tuple[int, ...] = BATCHES
    #: queries timed a repeat (another random sample each repeat, the seconds scaled to all
    #: of them); None: all
    timed: int | None = None

    @property
    def key(self) -> str:
        """``workload/queries``."""
        return f"{self.workload}/{self.queries}"


CASES = (Case("seed", 1_000), Case("seed", 10_000), Case("seed", 100_000, timed=5_000),
         Case("generic", 1_000, (2_000,)))
#: Listings indexed a run of the indexing-interference figure.
INDEXING = 50_000
#: The case the watcher matches while the indexing figure is measured.
INTERFERENCE = Case("seed", 10_000)
#: Evaluations of the batch filter alone, a batch.
FILTER_RUNS = 20
SEED = 29

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_HAN}]+|[^\W_{_HAN}]+(?:[.'’@_][^\W_{_HAN}]+)*")


# --- the workload ----------------------------------------------------------------------------


def words_of(text: str) -> list[str]:
    """The words a standing query is made of: Latin/digit words of two characters or more,
    and Han runs cut into two-character words (the keywords extractor's CJK bigrams; an odd
    run's last character alone)."""
    out = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        if re.match(f"[{_HAN}]", token):
            out += [token[i:i + 2] for i in range(0, len(token), 2)]
        elif len(token) > 1:
            out.append(token)
    return out


def query_pool(listings: Sequence[ListingUpsert], n: int, seed: int = SEED) -> list[str]:
    """``n`` standing-query texts: spans of 1-3 consecutive words (:func:`words_of`) of random
    listings' title and description, not starting or ending with an English stopword. Texts
    repeat when the listings' vocabulary is smaller than ``n`` (as generic queries of different
    seeds do); deterministic in ``seed``."""
    rng = random.Random(seed)
    words = [w for w in (words_of(f"{x.title} {x.description}") for x in listings) if w]
    out: list[str] = []
    while len(out) < n:
        text = rng.choice(words)
        length = rng.randint(1, min(3, len(text)))
        start = rng.randrange(len(text) - length + 1)
        span = text[start:start + length]
        if span[0].lower() in STOPWORDS or span[-1].lower() in STOPWORDS:
            continue
        query = " ".join(span)
        if to_search_text(query):
            out.append(query)
    return out


def positioned(listings: Sequence[ListingUpsert], first: int, partitions: int) -> list[Change]:
    """The listings as the replica hands them over, the ``k``-th at stream position
    ``first + k`` of a topic of ``partitions`` partitions: (``pos % P``, ``pos // P``)."""
    return [Change(x, encode(x), ((first + k) % partitions, (first + k) // partitions))
            for k, x in enumerate(listings)]


def messages_of(changes: Sequence[Change], topic: str, timestamp: float) -> list[RawMessage]:
    """The listings messages of a batch as the watcher's agent receives them."""
    out = []
    for change in changes:
        assert change.position is not None and isinstance(change.event, ListingUpsert)
        partition, offset = change.position
        out.append(RawMessage(topic, partition, offset, change.event.id.encode(), change.source,
                              timestamp))
    return out


def standing_records(queries: Sequence[str], min_scores: Sequence[float], settings: Settings,
                     watch_from: datetime, watch_offsets: dict[int, int]
                     ) -> list[StandingQuery]:
    """The queries as standing queries, each of its own seed, explored at ``watch_from`` on an
    index that held the listings topic up to ``watch_offsets`` (so each matches the listings
    from there on)."""
    records = []
    for k, (query, score) in enumerate(zip(queries, min_scores, strict=True)):
        seed = f"bench-seed-{k}"
        records.append(StandingQuery(
            query_id=query_id(seed, query, "bench"), query=query, seed_id=seed,
            extractor="keywords", model_version="bench", prompt_version="bench",
            min_score=score, results=10, watch_from=watch_from,
            watch_offsets=watch_offsets, ttl_s=settings.standing.ttl_s, updated_by="bench"))
    return records


@dataclass
class StubReplica:
    """The watcher's view of the worker's replica: the real index, always caught up (the
    batch was committed before the clock started), nothing confirmed yet."""

    index: SearchIndex
    ledger: Ledger

    async def wait_caught_up(self, timeout_s: float, urgent: bool = True) -> bool:
        """Everything is committed already."""
        return True


@contextmanager
def worker_switch_interval() -> Iterator[None]:
    """The GIL switch interval ``streams/app.py`` sets in a worker, for the block."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def shares(items: Sequence, threads: int) -> list[Sequence]:
    """``items`` in ``threads`` contiguous shares, as the watcher splits its queries."""
    size = -(-len(items) // threads)
    return [items[i:i + size] for i in range(0, len(items), size)]


# --- the paths -------------------------------------------------------------------------------


def watcher_match(watcher: Watcher, messages: Sequence[RawMessage]) -> tuple[float, int]:
    """Seconds ``Watcher.handle`` takes to match the batch, and the detections it made."""

    async def timed() -> tuple[float, int]:
        started = time.perf_counter()
        found = await watcher.handle(messages)
        return time.perf_counter() - started, found

    with worker_switch_interval():
        return asyncio.run(timed())


def within_query(index: tantivy.Index, arrivals: Arrivals) -> tantivy.Query:
    """The batch filter ``TantivyIndex.search_arrivals`` builds: ``kafka_pos`` in one of the
    partitions' ranges, scored 0."""
    ranges = [tantivy.Query.range_query(index.schema, "kafka_pos", tantivy.FieldType.Integer,
                                        position_of(p, first), position_of(p, last))
              for p, (first, last) in sorted(arrivals.items())]
    within = ranges[0] if len(ranges) == 1 else tantivy.Query.boolean_query(
        [(tantivy.Occur.Should, r) for r in ranges])
    return tantivy.Query.const_score_query(within, 0.0)


def parsed_queries(index: TantivyIndex, queries: Sequence[str]) -> list[tantivy.Query | None]:
    """Each query as the index searches it, folded clauses included (``TantivyIndex.parsed``;
    None: nothing to search)."""
    return [index.parsed(query) for query in queries]


def raw_match(pool: ThreadPoolExecutor, threads: int, index: tantivy.Index,
              prepared: Sequence[tuple[tantivy.Query | None, float]], limit: int
              ) -> tuple[float, int, int]:
    """Seconds for tantivy-py alone to run the prepared (query, min_score) pairs in
    ``threads`` contiguous shares, each thread looping over its own; the hits, and the hits
    scoring at least their query's ``min_score``."""

    def share(part: Sequence[tuple[tantivy.Query | None, float]]) -> tuple[int, int]:
        searcher = index.searcher()
        hits = matched = 0
        for query, floor in part:
            if query is None:
                continue
            found = searcher.search(query, limit, count=False).hits
            hits += len(found)
            matched += sum(1 for score, _ in found if score >= floor)
        return hits, matched

    started = time.perf_counter()
    counts = list(pool.map(share, shares(prepared, threads)))
    seconds = time.perf_counter() - started
    return seconds, sum(h for h, _ in counts), sum(m for _, m in counts)


def memory_match(pool: ThreadPoolExecutor, threads: int, changes: Sequence[Change],
                 queries: Sequence[str], limit: int) -> tuple[float, int]:
    """Seconds to build an in-memory index of the batch (``search.memory_index``: apply and
    commit) and run every query on it in shares on the threads; and the hits."""
    with worker_switch_interval():
        started = time.perf_counter()
        index = memory_index()
        index.apply(changes)
        index.commit(None)
        found = list(pool.map(lambda part: index.search_many(part, limit),
                              shares(queries, threads)))
        seconds = time.perf_counter() - started
        index.close()
    return seconds, sum(len(hits) for part in found for hits in part)


def unfiltered_search(pool: ThreadPoolExecutor, threads: int, index: SearchIndex,
                      queries: Sequence[str], limit: int) -> tuple[float, list[float]]:
    """Seconds for ``SearchIndex.search_many`` of every query over the whole index in shares on
    the threads (the explorer's top-N search); and each query's ``min_score`` as the explorer
    would set it (its last score when it returned ``limit`` results, else 0)."""
    with worker_switch_interval():
        started = time.perf_counter()
        found = list(pool.map(lambda part: index.search_many(part, limit),
                              shares(queries, threads)))
        seconds = time.perf_counter() - started
    floors = [max(0.0, hits[-1].score) if len(hits) >= limit else 0.0
              for part in found for hits in part]
    return seconds, floors


# --- the measurements ------------------------------------------------------------------------


class Stream:
    """New listings for the index, at the next stream positions, committed as the replica
    commits them."""

    def __init__(self, index: TantivyIndex, fresh: Sequence[ListingUpsert], partitions: int,
                 position: int) -> None:
        self.index = index
        self.fresh = list(fresh)
        self.partitions = partitions
        self.position = position
        self._used = 0
        self._renamed = 0

    def next_offsets(self) -> dict[int, int]:
        """Partition -> the offset its next listing will have."""
        return {p: (self.position + (p - self.position) % self.partitions) // self.partitions
                for p in range(self.partitions)}

    def take(self, n: int) -> list[Change]:
        """The next ``n`` listings (new texts while there are any, then renamed copies)."""
        listings = self.fresh[self._used:self._used + n]
        self._used += len(listings)
        if len(listings) < n:
            listings += renamed(self.fresh, n - len(listings), f"r{self._renamed}-")
            self._renamed += 1
        changes = positioned(listings, self.position, self.partitions)
        self.position += n
        return changes

    def commit_batch(self, n: int) -> list[Change]:
        """Apply and commit a batch of ``n`` new listings (not timed: the replica's work)."""
        changes = self.take(n)
        self.index.apply(changes)
        self.index.commit({})
        return changes


def index_rate(index: SearchIndex, changes: Sequence[Change], settings: Settings) -> float:
    """Listings/s of applying ``changes`` ``fetch_records`` at a time and committing every
    ``commit_interval_s`` or ``commit_docs`` changes, as the replica does, last commit
    included."""
    cfg = settings.index
    with worker_switch_interval():
        started = last_commit = time.perf_counter()
        for at in range(0, len(changes), cfg.fetch_records):
            index.apply(changes[at:at + cfg.fetch_records])
            now = time.perf_counter()
            if now - last_commit >= cfg.commit_interval_s or index.pending >= cfg.commit_docs:
                index.commit({})
                last_commit = time.perf_counter()
        index.commit({})
        return len(changes) / (time.perf_counter() - started)


def index_while_matching(index: SearchIndex, changes: Sequence[Change], settings: Settings,
                         watcher: Watcher, messages: Sequence[RawMessage]) -> dict:
    """:func:`index_rate` while another thread runs ``watcher.handle`` on ``messages`` over
    and over (its pass in flight when the indexing ends is waited for); the indexing rate, and
    how long the watcher's passes took and how many ended while indexing ran."""
    stop = threading.Event()
    started = threading.Event()
    passes: list[tuple[float, float]] = []

    def match() -> None:
        async def loop() -> None:
            started.set()
            while not stop.is_set():
                begun = time.perf_counter()
                await watcher.handle(messages)
                passes.append((begun, time.perf_counter()))

        asyncio.run(loop())

    matcher = threading.Thread(target=match, name="bench-watcher")
    with worker_switch_interval():
        matcher.start()
        started.wait()
        time.sleep(0.05)  # the first searches are running
        begun = time.perf_counter()
        rate = index_rate(index, changes, settings)
        ended = time.perf_counter()
        stop.set()
        matcher.join()
    return {"listings_per_s": rate, "seconds": ended - begun,
            "watcher_pass_s": [end - start for start, end in passes],
            "passes_ended_while_indexing": sum(1 for _, end in passes if end <= ended)}


async def _discard(topic: str, key: bytes, value: bytes) -> None:
    """The watcher's producer: detections are made and encoded, then dropped."""




def filter_seconds(index: tantivy.Index, within: tantivy.Query, runs: int = FILTER_RUNS
                   ) -> float:
    """Seconds one search of the batch filter alone takes (no query text), on one thread:
    the part of every filtered search that does not depend on the query."""
    searcher = index.searcher()
    started = time.perf_counter()
    for _ in range(runs):
        searcher.search(within, 1, count=False)
    return (time.perf_counter() - started) / runs


def match_case(index: TantivyIndex, stream: Stream, pool: ThreadPoolExecutor,
               settings: Settings, queries: Sequence[str], batches: Sequence[int],
               watch_from: datetime, stamp: float) -> tuple[dict, dict[int, dict], Watcher,
                                                            list[RawMessage]]:
    """One repeat of one set of queries: the unfiltered search (which also gives each query its
    ``min_score``), then a new batch of each size through the three paths. Returns the
    unfiltered figures, the figures per batch size, and the watcher with the largest batch's
    messages (for the indexing figure; the caller closes the watcher)."""
    exploration = settings.exploration
    threads, limit = exploration.search_threads, exploration.results_per_query
    raw_index = index.tantivy_index
    seconds, floors = unfiltered_search(pool, threads, index, queries, limit)
    parsed = parsed_queries(index, queries)
    raw_seconds, _, _ = raw_match(pool, threads, raw_index, [(q, 0.0) for q in parsed], limit)
    unfiltered = {"pipeline_s": seconds, "raw_s": raw_seconds}
    book = StandingBook(settings.standing.changed(max_active=len(queries)))
    book.extend(standing_records(queries, floors, settings, watch_from, stream.next_offsets()))
    book.active()  # computed once: the worker keeps it until the book changes
    watcher = Watcher(settings.standing, settings.topics, StubReplica(index, Ledger()), book,
                      _discard, wait_index_s=exploration.wait_index_s,
                      search_threads=threads)
    cells: dict[int, dict] = {}
    kept: list[RawMessage] = []
    try:
        for batch in batches:
            changes = stream.commit_batch(batch)
            messages = messages_of(changes, settings.topics.listings, stamp)
            if batch == max(batches):
                kept = messages
            watcher_s, detections = watcher_match(watcher, messages)
            within = within_query(raw_index, arrivals_of(messages))
            prepared = [(None if q is None else tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, q), (tantivy.Occur.Must, within)]), floor)
                for q, floor in zip(parsed, floors, strict=True)]
            # like the watcher: every listing of the batch a query scores at all
            raw_s, raw_hits, raw_matched = raw_match(pool, threads, raw_index, prepared, batch)
            memory_s, memory_hits = memory_match(pool, threads, changes, queries, batch)
            cells[batch] = {"watcher_s": watcher_s, "raw_s": raw_s, "memory_s": memory_s,
                            "filter_s": filter_seconds(raw_index, within),
                            "detections": detections, "raw_hits": raw_hits,
                            "raw_matched": raw_matched, "memory_hits": memory_hits}
    except BaseException:
        watcher.close()
        raise
    return unfiltered, cells, watcher, kept


def query_pools(cases: Sequence[Case], seed: int = SEED) -> dict[str, list[str]]:
    """Each workload's query texts (as many as its largest case), from listings of another
    marketplace than the indexed one."""
    items = synthetic_items(20_000, seed=seed + 1)
    sources = {"seed": as_listings([i for i in items if i.harmful]),
               "generic": as_listings(items)}
    sizes: dict[str, int] = {}
    for case in cases:
        sizes[case.workload] = max(sizes.get(case.workload, 0), case.queries)
    return {w: query_pool(sources[w], n, seed) for w, n in sizes.items()}


def _index_with_matching(index: TantivyIndex, stream: Stream, settings: Settings,
                         watcher: Watcher, messages: Sequence[RawMessage], repeats: int,
                         size: int, progress: Callable[[str], None]) -> dict:
    runs: dict[str, list[dict]] = {"alone": [], "matching": []}
    for repeat in range(repeats):
        for kind in ("alone", "matching") if repeat % 2 == 0 else ("matching", "alone"):
            changes = stream.take(size)
            runs[kind].append({"listings_per_s": index_rate(index, changes, settings)}
                              if kind == "alone" else
                              index_while_matching(index, changes, settings, watcher, messages))
        progress(f"standing indexing repeat {repeat + 1}/{repeats}: alone "
                 f"{runs['alone'][-1]['listings_per_s']:,.0f}/s, while matching "
                 f"{runs['matching'][-1]['listings_per_s']:,.0f}/s")
    return runs


def measure(settings: Settings, size: int, repeats: int, *, cases: Sequence[Case] = CASES,
            indexing: int = INDEXING,
            interference: Case | None = INTERFERENCE,
            progress: Callable[[str], None] = print) -> dict:
    """Every figure of the module docstring, per repeat (seconds scaled to all the queries
    where a sample was timed)."""
    exploration = settings.exploration
    threads, limit = exploration.search_threads, exploration.results_per_query
    partitions = settings.topic.partitions
    listings = synthetic_listings(size + sum(sum(c.batches) for c in cases) * repeats,
                                  seed=SEED)
    pools = query_pools(cases)
    warm_queries = [q for texts in pools.values() for q in texts[:250]]
    watch_from = datetime.now(UTC) - timedelta(hours=1)
    stamp = time.time()
    out: dict = {"cases": {}, "indexing": None}
    with tempfile.TemporaryDirectory() as tmp, \
            ThreadPoolExecutor(threads, thread_name_prefix="bench") as pool:
        index = open_index(Path(tmp), settings.index)
        if not isinstance(index, TantivyIndex):
            index.close()
            raise RuntimeError("the standing benchmark measures the tantivy backend")
        try:
            started = time.perf_counter()
            index.apply(positioned(listings[:size], 0, partitions))
            index.commit({})
            progress(f"standing: {size:,} listings indexed in "
                     f"{time.perf_counter() - started:.1f}s")
            stream = Stream(index, listings[size:], partitions, size)
            warm = stream.commit_batch(max(BATCHES))  # warm every path's caches
            unfiltered_search(pool, threads, index, warm_queries, limit)
            raw_match(pool, threads, index.tantivy_index, [
                (q, 0.0) for q in parsed_queries(index, warm_queries)], limit)
            memory_match(pool, threads, warm, warm_queries, limit)
            kept: tuple[Watcher, list[RawMessage]] | None = None
            for repeat in range(repeats):
                for case in cases:
                    texts = pools[case.workload]
                    queries = (texts[:case.queries] if case.timed is None
                               else random.Random(SEED + repeat).sample(texts[:case.queries],
                                                                        case.timed))
                    scale = case.queries / len(queries)
                    unfiltered, cells, watcher, messages = match_case(
                        index, stream, pool, settings, queries, case.batches, watch_from,
                        stamp)
                    if case == interference and repeat == repeats - 1:
                        kept = (watcher, messages)
                    else:
                        watcher.close()
                    figures = out["cases"].setdefault(case.key, {
                        "workload": case.workload, "queries": case.queries,
                        "queries_timed": len(queries), "scale": scale,
                        "distinct_timed": len(set(queries)),
                        "unfiltered_s": [], "unfiltered_raw_s": [], "batches": {}})
                    figures["unfiltered_s"].append(unfiltered["pipeline_s"] * scale)
                    figures["unfiltered_raw_s"].append(unfiltered["raw_s"] * scale)
                    for batch, cell in cells.items():
                        into = figures["batches"].setdefault(str(batch), {})
                        for key, value in cell.items():
                            scaled = key.endswith("_s") and key != "filter_s"
                            into.setdefault(key, []).append(value * scale if scaled else value)
                        progress(f"standing repeat {repeat + 1}/{repeats}, {case.queries:,} "
                                 f"{case.workload} queries"
                                 + (f" ({len(queries):,} timed)" if scale > 1 else "")
                                 + f", batch {batch}: watcher {cell['watcher_s']:.2f}s, "
                                 f"raw {cell['raw_s']:.2f}s, memory index "
                                 f"{cell['memory_s']:.2f}s")
            if indexing and kept is not None:
                watcher, messages = kept
                try:
                    out["indexing"] = _index_with_matching(index, stream, settings, watcher,
                                                           messages, repeats, indexing,
                                                           progress)
                finally:
                    watcher.close()
            last = stream.commit_batch(max(BATCHES))
            out["filter_at_end"] = {
                "listings": index.count(),
                "seconds": filter_seconds(index.tantivy_index, within_query(
                    index.tantivy_index,
                    arrivals_of(messages_of(last, settings.topics.listings, 0.0))))}
        finally:
            index.close()
    out.update({"size": size, "threads": threads, "limit": limit, "partitions": partitions,
                "indexing_listings": indexing,
                "interference": None if interference is None else {
                    "workload": interference.workload, "queries": interference.queries,
                    "batch": max(interference.batches)},
                "pools": {w: {"texts": len(t), "distinct": len(set(t)),
                              "words": {str(k): sum(1 for q in t if len(q.split()) == k)
                                        for k in (1, 2, 3)},
                              "examples": t[:8]} for w, t in pools.items()}})
    return out


# --- the report ------------------------------------------------------------------------------


def _label(figures: dict) -> str:
    return (f"{figures['queries']:,} {figures['workload']} queries"
            + (" (extrapolated)" if figures["scale"] > 1 else ""))


def rows(result: dict) -> list[dict]:
    """The report's rows: per set of queries and batch size, the watcher's listings/s against
    the raw ceiling and against the in-memory batch index; the unfiltered search's queries/s
    against raw; indexing while matching against indexing alone."""
    out = []
    threads, limit = result["threads"], result["limit"]
    for figures in result["cases"].values():
        for batch, cell in figures["batches"].items():
            size = int(batch)
            rate = [size / s for s in cell["watcher_s"]]
            metric = (f"{_label(figures)}, batch {size:,}: Watcher.handle (search_arrivals, "
                      f"{threads} threads), listings/s")
            out.append(comparison("standing", metric, "/s", rate,
                                  ceiling=[size / s for s in cell["raw_s"]],
                                  ceiling_name="raw tantivy-py, same filter, pre-parsed"))
            out.append(comparison("standing", metric, "/s", rate,
                                  ceiling=[size / s for s in cell["memory_s"]],
                                  ceiling_name="alternative: in-memory index of the batch "
                                               "(build + search_many)"))
    for figures in result["cases"].values():
        n = figures["queries"]
        out.append(comparison(
            "standing", f"{_label(figures)}: unfiltered top-{limit} (search_many, {threads} "
                        "threads), queries/s", "/s",
            [n / s for s in figures["unfiltered_s"]],
            ceiling=[n / s for s in figures["unfiltered_raw_s"]],
            ceiling_name="raw tantivy-py, pre-parsed"))
    indexing, interference = result.get("indexing"), result.get("interference")
    if indexing and interference:
        out.append(comparison(
            "standing", f"indexing while the watcher matches {interference['queries']:,} "
                        f"{interference['workload']} queries, listings/s", "/s",
            [f["listings_per_s"] for f in indexing["matching"]],
            ceiling=[f["listings_per_s"] for f in indexing["alone"]],
            ceiling_name="indexing alone, same process and index"))
    return out


def notes(result: dict) -> list[str]:
    """What the rows leave out: the workload, the matches, the filter's own cost, the matching
    rate while indexing."""
    out = [f"{result['size']:,} synthetic listings indexed with positions over "
           f"{result['partitions']} partitions; each batch new listings applied and committed "
           f"before its clock starts; {result['threads']} search threads, top "
           f"{result['limit']} a query"]
    for workload, pool in result["pools"].items():
        words = pool["words"]
        out.append(f"{workload} queries: {pool['texts']:,} spans ({pool['distinct']:,} "
                   f"distinct texts; 1/2/3 words {words['1']:,}/{words['2']:,}/"
                   f"{words['3']:,}), e.g. " + ", ".join(f"'{q}'" for q in pool["examples"]))
    out += [f"extrapolated: {f['queries_timed']:,} random queries of the {f['queries']:,} timed "
            "a repeat (another sample each repeat), seconds scaled linearly to all of them"
            for f in result["cases"].values() if f["scale"] > 1]
    out += ["raw sides at the default GIL switch interval, the watcher and the memory index at "
            f"{SWITCH_INTERVAL_S * 1000:g} ms as streams/app.py sets it"]
    filters = [s for f in result["cases"].values() for c in f["batches"].values()
               for s in c["filter_s"]]
    end = result["filter_at_end"]
    out.append(f"the batch filter alone (kafka_pos ranges, no text) takes "
               f"{statistics.median(filters) * 1000:.2f} ms a search at ~{result['size']:,} "
               f"listings (median of the batches) and {end['seconds'] * 1000:.2f} ms at "
               f"{end['listings']:,}")
    for figures in result["cases"].values():
        for batch, cell in figures["batches"].items():
            out.append(
                f"{_label(figures)}, batch {int(batch):,}: detections a batch (score >= "
                f"min_score) {statistics.median(cell['detections']):,.0f}, raw matches "
                f"{statistics.median(cell['raw_matched']):,.0f} of "
                f"{statistics.median(cell['raw_hits']):,.0f} hits; memory index "
                f"{statistics.median(cell['memory_hits']):,.0f} hits (scored on the batch "
                "alone)" + (", of the timed sample" if figures["scale"] > 1 else ""))
    indexing, interference = result.get("indexing"), result.get("interference")
    if indexing and interference:
        passes = [t for f in indexing["matching"] for t in f["watcher_pass_s"]]
        window = [f["seconds"] for f in indexing["matching"]]
        out.append(f"indexing: {result['indexing_listings']:,} listings a run, apply and "
                   f"commit as the replica ({statistics.median(window):.1f} s while matching); "
                   f"the watcher's passes over {interference['queries']:,} "
                   f"{interference['workload']} queries and a batch of "
                   f"{interference['batch']:,} took {statistics.median(passes):.1f} s each "
                   f"(median; {sum(f['passes_ended_while_indexing'] for f in indexing['matching'])}"
                   " ended during an indexing run): it matched throughout")
    return out


def run(settings: Settings, *, size: int = SIZE, repeats: int = 3,
        progress: Callable[[str], None] = print) -> dict:
    """The standing-queries benchmark for the aggregate report (``bench.run``)."""
    result = measure(settings, size, repeats, progress=progress)
    return {"params": {"size": size, "repeats": repeats,
                       "cases": [{"workload": c.workload, "queries": c.queries,
                                  "batches": list(c.batches), "timed": c.timed}
                                 for c in CASES],
                       "search_threads": result["threads"],
                       "results_per_query": result["limit"],
                       "standing_batch": settings.standing.batch,
                       "standing_max_active": settings.standing.max_active},
            "rows": rows(result), "notes": notes(result), "details": result}


def main() -> None:
    """Run the standing-queries benchmark alone; write ``standing.json`` and ``standing.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(".cache/bench"))
    args = parser.parse_args()
    started = time.time()
    section = run(Settings(), size=args.size, repeats=args.repeats)
    report = write_report(args.out, "standing", {
        "params": {"size": args.size, "repeats": args.repeats},
        "benchmarks": {"standing": section}}, started=started, render=markdown)
    print(markdown(report))


if __name__ == "__main__":
    main()
