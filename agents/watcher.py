"""The watcher: every batch of new listings is matched against the standing queries, and what
they match goes to review as detections.

``Watcher.handle`` takes a batch of raw listings messages (the worker's consumer group shares
the listings topic's partitions among the workers, so each new listing is matched by one
worker). It waits until the batch is searchable in the worker's index, runs every active
standing query (``agents.standing.StandingBook.active``) over just the batch's listings, scored
against the whole index (``SearchIndex.search_arrivals``), and emits a detection for every
listing a query scores at least its ``min_score`` and, with ``QEXPLORER_STANDING_EVIDENCE``,
that holds the evidence of the query's words (``agents.standing.has_evidence``).

Nothing falls between a seed's exploration and its standing queries: a query matches a
partition's listings from the first offset its exploration's index did not hold
(``watch_offsets``), and the first time this watcher runs it on a partition it searches back
to there (:func:`arrivals_for`), so a listing committed while the seed was being explored, or
handled before the query reached this worker, is still matched. A batch is acknowledged only
after its detections are on the broker, so a crash repeats a match (same detection keys) and
never loses one. A bad listing message is dead-lettered by the worker's replica, not here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agents.explorer import Observe, RawMessage, Replica, Send, until_it_works
from agents.standing import (
    StandingBook,
    evidence_terms,
    has_evidence,
    is_common,
    silenced,
    standing_detections,
)
from qexplorer.search.protocol import Arrivals, Hit
from qexplorer.search.tantivy_index import indexed_terms
from schemas.codec import encode
from schemas.models import Detection, StandingQuery
from schemas.topics import DETECTIONS, Topics

if TYPE_CHECKING:
    from qexplorer.config import StandingSettings

log = logging.getLogger(__name__)

#: Matches a query keeps from one search (a batch, or a catch-up over what came before).
MAX_MATCHES = 10_000


@dataclass
class WatcherStats:
    """Counters a worker reports."""

    listings: int = 0  # new listings matched against the standing queries
    batches: int = 0
    searches: int = 0  # standing-query searches run
    detections: int = 0
    without_evidence: int = 0  # matches dropped: their listing lacked the query's evidence


def arrivals_of(messages: Sequence[RawMessage]) -> Arrivals:
    """The first and last offset of each partition in a batch."""
    ranges: dict[int, tuple[int, int]] = {}
    for m in messages:
        first, last = ranges.get(m.partition, (m.offset, m.offset))
        ranges[m.partition] = (min(first, m.offset), max(last, m.offset))
    return ranges


def arrivals_for(query: StandingQuery, batch: Arrivals, caught_up: Set[int]) -> Arrivals:
    """What of the listings topic ``query`` is run over with a batch: in each partition, the
    batch's listings from the query's first unsearched offset on, and for a partition this
    watcher has not run the query on yet (not in ``caught_up``) everything back to that
    offset. Empty: nothing to search."""
    out: dict[int, tuple[int, int]] = {}
    for partition, (first, last) in batch.items():
        start = query.watch_offsets.get(partition, 0)
        low = max(first, start) if partition in caught_up else start
        if last >= low:
            out[partition] = (low, last)
    return out


class Watcher:
    """Matches new listings against the standing queries and emits the detections."""

    def __init__(self, settings: StandingSettings, topics: Topics, replica: Replica,
                 book: StandingBook, send: Send, *, wait_index_s: float,
                 search_threads: int = 1, observe: Observe | None = None) -> None:
        """``observe`` receives latencies: ``watch_wait_index`` and ``watch_search`` (a batch)
        and ``listing_to_detection`` (a matched listing's message reaching the broker to its
        detection being acknowledged: the standing queries' freshness)."""
        self.settings = settings
        self.topics = topics
        self.replica = replica
        self.book = book
        self.wait_index_s = wait_index_s
        self.stats = WatcherStats()
        self._send = send
        self._threads = max(1, search_threads)
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="watch")
        self._observe = observe or (lambda stage, seconds: None)
        #: query id -> the partitions this watcher has run it on (searched back to its start)
        self._caught_up: dict[str, set[int]] = {}
        self._handled: dict[int, int] = {}  # partition -> the last offset handled
        self._lock = asyncio.Lock()  # batches and catch-ups take turns

    async def handle(self, messages: Sequence[RawMessage]) -> int:
        """Match a batch of listings messages; returns the detections emitted."""
        if not messages or not self.settings.enabled:
            return 0
        self.stats.batches += 1
        self.stats.listings += len(messages)
        batch = arrivals_of(messages)
        for partition, (_, last) in batch.items():
            self._handled[partition] = max(last, self._handled.get(partition, -1))
        if not self.book.active():
            return 0  # a query that comes later catches up (:meth:`catch_up`)
        detections = await self._match(batch)
        published = {m.key.decode("utf-8", "replace"): m.timestamp for m in messages
                     if m.key is not None and m.timestamp}
        now = time.time()
        for detection in detections:
            if (at := published.get(detection.listing_id)) is not None:
                self._observe("listing_to_detection", now - at)
        return len(detections)

    async def catch_up(self) -> int:
        """Run each active query on the partitions this watcher handled before the query
        reached it, back to where the query starts; returns the detections emitted. The
        worker calls it every second: a query published while a batch was being matched,
        or while there was none to match, misses nothing even if no listing follows."""
        if not self._handled or not self.settings.enabled:
            return 0
        handled = set(self._handled)
        if all(handled <= self._caught_up.get(q.query_id, set()) for q in self.book.active()):
            return 0
        # an empty range per partition: only queries not caught up there search anything
        batch = {p: (last + 1, last) for p, last in self._handled.items()}
        return len(await self._match(batch))

    async def _match(self, batch: Arrivals) -> list[Detection]:
        """Every active query over its part of ``batch`` (:func:`arrivals_for`), once the
        batch is searchable; the detections, emitted."""
        async with self._lock:
            active = self.book.active()
            work: dict[tuple, list[StandingQuery]] = {}  # queries grouped by their ranges
            for query in active:
                arrivals = arrivals_for(query, batch, self._caught_up.get(query.query_id, ()))
                if arrivals:
                    work.setdefault(tuple(sorted(arrivals.items())), []).append(query)
            detections: dict[str, Detection] = {}
            if work:
                started = time.perf_counter()
                # the regular commit, not an early one: see Replica.wait_caught_up
                while not await self.replica.wait_caught_up(self.wait_index_s, urgent=False):
                    # the batch must be searchable before it is matched: waiting loses nothing
                    log.warning("index not caught up after %.1fs: the standing queries wait",
                                self.wait_index_s)
                self._observe("watch_wait_index", time.perf_counter() - started)
                started = time.perf_counter()
                excluded = self.replica.ledger.confirmed
                for arrivals, queries in work.items():
                    found = await self._search(queries, dict(arrivals))
                    self.stats.searches += len(queries)
                    if self.settings.evidence:
                        found = await asyncio.get_running_loop().run_in_executor(
                            self._pool, self._evident, queries, found)
                    for query, hits in zip(queries, found, strict=True):
                        for detection in standing_detections(query, hits, excluded):
                            kept = detections.get(detection.key)
                            if kept is None or detection.best_score > kept.best_score:
                                detections[detection.key] = detection
                self._observe("watch_search", time.perf_counter() - started)
                await self._emit(list(detections.values()))
            for query in active:  # each has now seen what it needs of these partitions
                self._caught_up.setdefault(query.query_id, set()).update(batch)
            self.stats.detections += len(detections)
            return list(detections.values())

    async def _search(self, queries: Sequence[StandingQuery], arrivals: Arrivals
                      ) -> list[list[Hit]]:
        """Every query over ``arrivals``, in contiguous shares on the search threads: every
        listing there it scores at least its ``min_score`` (up to :data:`MAX_MATCHES`)."""
        texts = [q.query for q in queries]
        floors = [q.min_score for q in queries]
        span = sum(last - first + 1 for first, last in arrivals.values())
        limit = max(1, min(span, MAX_MATCHES))
        index = self.replica.index
        size = -(-len(texts) // self._threads)
        loop = asyncio.get_running_loop()
        shares = await asyncio.gather(*(
            loop.run_in_executor(self._pool, index.search_arrivals, texts[i:i + size],
                                 arrivals, limit, floors[i:i + size])
            for i in range(0, len(texts), size)))
        return [hits for share in shares for hits in share]

    def _evident(self, queries: Sequence[StandingQuery], found: Sequence[Sequence[Hit]]
                 ) -> list[list[Hit]]:
        """Each query's hits that hold the evidence of its words (on a search thread: the
        index's document frequencies may be a request away)."""
        frequencies: dict[str, int] = {}

        def doc_freq(term: str) -> int:
            if term not in frequencies:
                frequencies[term] = self.replica.index.doc_freq(term)
            return frequencies[term]

        listings = self.replica.index.count()
        kept = []
        for query, hits in zip(queries, found, strict=True):
            terms = evidence_terms(query.query)
            if hits and silenced(query, is_common(terms, doc_freq, listings,
                                                  self.settings.max_common_share)):
                self.stats.without_evidence += len(hits)
                kept.append([])
                continue
            evident = [h for h in hits if has_evidence(
                terms, indexed_terms(h.title, h.description), doc_freq, listings,
                self.settings.min_term_share)]
            self.stats.without_evidence += len(hits) - len(evident)
            kept.append(evident)
        return kept

    async def _emit(self, detections: list[Detection]) -> None:
        if not detections:
            return
        messages = [(self.topics.detections, DETECTIONS.key(d).encode(), encode(d))
                    for d in detections]

        def failed(state) -> None:
            log.warning("emitting %d standing detections failed (%s); retrying in %.1fs",
                        len(messages), state.outcome.exception() if state.outcome else "?",
                        state.upcoming_sleep)

        async for attempt in until_it_works(Exception, failed):
            with attempt:
                await asyncio.gather(*(self._send(*m) for m in messages))

    def close(self) -> None:
        """Stop the search threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
