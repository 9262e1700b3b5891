"""The explorer: for each confirmed toxic item, extract queries, search them, emit detections and
search feedback.

``Explorer.handle`` takes a batch of raw toxic-item messages and never raises: a message that
breaks the contract goes to the dead-letter topic; an extractor that is down is retried with
backoff while the batch stays unacknowledged. Outputs are awaited until the broker has them
before the seed counts as explored, so a crash can only repeat work (same keys), never lose it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from agents.explore import Ledger, Provenance, merge_hits
from agents.extractor.base import Extraction, Extractor, ExtractorError, SeedText
from agents.prompt import PROMPT_VERSION
from agents.standing import evidence_terms, is_common, standing_queries
from qexplorer.search.protocol import Hit, SearchIndex
from schemas.codec import SchemaError, dead_letter, decode, encode
from schemas.models import (
    DeadLetter,
    Detection,
    SearchFeedback,
    StandingQuery,
    ToxicItem,
    explored_key,
    utcnow,
)
from schemas.topics import DEAD_LETTER, DETECTIONS, SEARCH_FEEDBACK, STANDING_QUERIES, Topics

if TYPE_CHECKING:
    from datetime import datetime

    from qexplorer.config import ExplorationSettings, StandingSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A consumed message, independent of the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # when the broker got it (epoch seconds), if known


#: Sends (topic, key, value) and resolves when the broker has acknowledged it.
Send = Callable[[str, bytes, bytes], Awaitable[object]]
#: Receives latency samples: (stage, seconds).
Observe = Callable[[str, float], None]


class Replica(Protocol):
    """What the explorer needs from the worker's replica of shared state."""

    @property
    def index(self) -> SearchIndex:
        """Every listing, searchable."""
        ...

    @property
    def ledger(self) -> Ledger:
        """Confirmed items and explored (seed, model version) pairs."""
        ...

    async def wait_caught_up(self, timeout_s: float, urgent: bool = True) -> bool:
        """Wait until everything published before the call is searchable (``urgent``: ask
        for an early commit rather than wait for the next regular one)."""
        ...


def search_seeds(index: SearchIndex, work: Sequence[tuple[str, Sequence[str]]],
                 limit: int) -> list[list[list[Hit]] | Exception]:
    """Each seed's queries (``(seed id, queries)``), the seed itself left out of its results.
    A seed whose search fails gets the exception instead, and the others go on."""
    out: list[list[list[Hit]] | Exception] = []
    for seed_id, queries in work:
        try:
            out.append(index.search_many(queries, limit, (seed_id,)))
        except Exception as exc:  # handed back: that seed is dead-lettered
            out.append(exc)
    return out


async def fan_out(pool: Executor, threads: int, index: SearchIndex,
                  work: Sequence[tuple[str, Sequence[str]]], limit: int
                  ) -> dict[str, list[list[Hit]] | Exception]:
    """Search a batch's seeds (see :func:`search_seeds`) on ``pool`` in ``threads``
    contiguous shares, one hand-off a share: a hand-off to a thread costs as much as a few
    searches (``bench/exploration.py``: 3.3k queries/s with one a query, 6.9k with one a
    seed, 10.2k with one a share)."""
    if not work:
        return {}
    size = -(-len(work) // max(1, min(threads, len(work))))
    shares = [work[i:i + size] for i in range(0, len(work), size)]
    loop = asyncio.get_running_loop()
    done = await asyncio.gather(*(loop.run_in_executor(pool, search_seeds, index, share, limit)
                                  for share in shares))
    return {seed_id: found for share, results in zip(shares, done, strict=True)
            for (seed_id, _), found in zip(share, results, strict=True)}


@dataclass
class ExplorerStats:
    """Counters a worker reports."""

    seeds_explored: int = 0
    seeds_skipped: int = 0
    queries: int = 0
    detections: int = 0
    dead_letters: int = 0
    extractor_errors: int = 0
    rollouts: int = 0
    seeds_reexplored: int = 0  # explored again under a new model version (of seeds_explored)
    standing_queries: int = 0  # queries that went on watching new listings
    standing_common: int = 0  # of those, made of words common where they were explored


class Explorer:
    """Explores seeds against the worker's replica and emits the results."""

    def __init__(self, settings: ExplorationSettings, topics: Topics, replica: Replica,
                 extractor: Extractor, send: Send, *, fallback: Extractor | None = None,
                 observe: Observe | None = None,
                 standing: StandingSettings | None = None) -> None:
        """``observe`` receives latencies: ``wait_index`` (a batch waiting for the index to
        hold what was published before it), ``extract`` (a batch's extraction), ``search``
        (a batch's queries), ``emit`` (a seed's outputs until the broker acknowledged them) and
        ``seed_to_detection`` (from the seed's message reaching the broker to that).
        ``standing``: how an explored seed's queries become standing queries (None: they
        do not)."""
        self.settings = settings
        self.standing = standing
        self.topics = topics
        self.replica = replica
        self.extractor = extractor
        self.fallback = fallback
        self.stats = ExplorerStats()
        self._send = send
        self._pool = ThreadPoolExecutor(settings.search_threads, thread_name_prefix="search")
        self._busy = False
        self._retired: list[Extractor] = []
        self._observe = observe or (lambda stage, seconds: None)
        #: extractor failures since its last success (the health endpoint reads it)
        self.failing_streak = 0

    @property
    def provenance(self) -> Provenance:
        """What produced this worker's queries."""
        return provenance_of(self.extractor)

    async def switch_extractor(self, new: Extractor) -> None:
        """Serve the next batches with ``new``. A batch in flight finishes with the old
        extractor (and is recorded under its version), which is closed after it."""
        old, self.extractor = self.extractor, new
        self.stats.rollouts += 1
        if self._busy:
            self._retired.append(old)
        else:
            await old.aclose()

    async def handle(self, messages: Sequence[RawMessage]) -> None:
        """Explore a batch of toxic-item messages. Never raises."""
        self._busy = True
        try:
            await self._handle(messages)
        finally:
            self._busy = False
            retired, self._retired = self._retired, []
            for extractor in retired:
                await extractor.aclose()

    async def _handle(self, messages: Sequence[RawMessage]) -> None:
        seeds: dict[str, ToxicItem] = {}
        sources: dict[str, RawMessage] = {}  # the message each seed came from (its dead letter)
        ledger = self.replica.ledger
        for message in messages:
            try:
                item = decode(ToxicItem, message.value)
            except SchemaError as exc:
                await self._dead_letter(message, "decode-toxic-item", exc)
                continue
            ledger.confirm_item(item)
            if ledger.is_explored(item.id, self.provenance.model_version):
                self.stats.seeds_skipped += 1
                continue
            seeds.setdefault(item.id, item)
            sources.setdefault(item.id, message)
        if not seeds:
            return
        watch_from = utcnow()
        started = time.perf_counter()
        if not await self.replica.wait_caught_up(self.settings.wait_index_s):
            log.warning("index not caught up after %.1fs: exploring with what it has",
                        self.settings.wait_index_s)
        self._observe("wait_index", time.perf_counter() - started)
        # Asked again now that the replica has read the feedback published before: a seed
        # redelivered after a crash was explored if its feedback is on the broker. Exploring
        # it again would republish its standing queries from a later position and with a
        # higher floor, and what the first ones had not matched yet would be lost.
        for seed_id in [s for s in seeds
                        if ledger.is_explored(s, self.provenance.model_version)]:
            del seeds[seed_id]
            self.stats.seeds_skipped += 1
        if not seeds:
            return
        # what the search below sees at least: the standing queries take over from here
        searched = (await asyncio.to_thread(self.replica.index.committed_offsets)
                    ).get(self.topics.listings, {})
        provenance, extractions = await self._extract(
            [SeedText(s.id, s.title, s.description) for s in seeds.values()])
        started = time.perf_counter()
        found = await fan_out(self._pool, self.settings.search_threads, self.replica.index,
                              [(e.seed_id, e.queries) for e in extractions if e.queries],
                              self.settings.results_per_query)
        self._observe("search", time.perf_counter() - started)
        await asyncio.gather(*(self._explore_one(seeds[e.seed_id], e, provenance,
                                                 sources[e.seed_id], found.get(e.seed_id),
                                                 watch_from, searched)
                               for e in extractions))

    async def _explore_one(self, seed: ToxicItem, extraction: Extraction,
                           provenance: Provenance, message: RawMessage,
                           results: list[list[Hit]] | Exception | None,
                           watch_from: datetime, searched: Mapping[int, int]) -> None:
        try:
            queries = extraction.queries
            if not queries:
                raise ValueError("the extractor produced no valid query for this item")
            if isinstance(results, Exception):
                raise results
            assert results is not None  # fan_out searched every seed with queries
            per_query = list(zip(queries, results, strict=True))
            detections, feedback = merge_hits(seed.id, per_query,
                                              self.replica.ledger.confirmed, provenance)
            standing: list[StandingQuery] = []
            if self.standing is not None and self.standing.enabled:
                common = await asyncio.to_thread(
                    self._common, [q for q, hits in per_query if hits])
                standing = standing_queries(seed.id, per_query, provenance,
                                            watch_from=watch_from, watch_offsets=searched,
                                            limit=self.settings.results_per_query,
                                            settings=self.standing, common=common.get)
                self.stats.standing_common += sum(1 for q in standing if q.common_at_start)
            started = time.perf_counter()
            await self._emit(detections, feedback, standing)
            self._observe("emit", time.perf_counter() - started)
            if message.timestamp:
                self._observe("seed_to_detection", time.time() - message.timestamp)
            self.replica.ledger.mark_explored([explored_key(seed.id, provenance.model_version)])
            self.stats.seeds_explored += 1
            self.stats.queries += len(queries)
            self.stats.detections += len(detections)
            self.stats.standing_queries += len(standing)
        except Exception as exc:  # one seed's bad data must not stop the others
            log.exception("exploring seed %s failed", seed.id)
            await self._dead_letter(message, "explore", exc)

    def _common(self, queries: Sequence[str]) -> dict[str, bool]:
        """Which queries are made of common words (``agents.standing.is_common``) in this
        worker's index, as their standing queries record it (on a thread: a document
        frequency may be a request away)."""
        assert self.standing is not None
        index = self.replica.index
        listings = index.count()
        return {q: is_common(evidence_terms(q), index.doc_freq, listings,
                             self.standing.max_common_share) for q in queries}

    async def _extract(self, seeds: list[SeedText]) -> tuple[Provenance, list[Extraction]]:
        """The extractions of a batch and what produced them. Each attempt uses the
        extractor in service at that moment, so a rollout also rescues a batch waiting
        for a server that is gone."""
        k = self.settings.queries_per_seed

        def failed(state: RetryCallState) -> None:
            # The batch stays unacknowledged: seeds wait for the model, they are not lost.
            self.stats.extractor_errors += 1
            self.failing_streak += 1
            log.warning("extractor %s failed (%s); retrying in %.1fs", self.extractor.name,
                        state.outcome.exception() if state.outcome else "?",
                        state.upcoming_sleep)

        async for attempt in until_it_works(ExtractorError, failed):
            with attempt:
                extractor = self.extractor
                started = time.perf_counter()
                extractions = await extractor.extract(seeds, k)
        self._observe("extract", time.perf_counter() - started)
        self.failing_streak = 0
        provenance = provenance_of(extractor)
        if self.fallback is None:
            return provenance, extractions
        empty = [s for s, e in zip(seeds, extractions, strict=True) if not e.queries]
        if not empty:
            return provenance, extractions
        backup = {e.seed_id: e for e in await self.fallback.extract(empty, k)}
        return provenance, [backup.get(e.seed_id, e) if not e.queries else e
                            for e in extractions]

    async def _emit(self, detections: list[Detection], feedback: list[SearchFeedback],
                    standing: list[StandingQuery]) -> None:
        topics = self.topics
        messages = [(topics.detections, DETECTIONS.key(d).encode(), encode(d))
                    for d in detections]
        messages += [(topics.feedback, SEARCH_FEEDBACK.key(f).encode(), encode(f))
                     for f in feedback]
        messages += [(topics.standing, STANDING_QUERIES.key(q).encode(), encode(q))
                     for q in standing]

        def failed(state: RetryCallState) -> None:
            log.warning("emitting %d records failed (%s); retrying in %.1fs", len(messages),
                        state.outcome.exception() if state.outcome else "?",
                        state.upcoming_sleep)

        # Detections first: a feedback record marks the seed explored (the replica reads its
        # key), so it must never be on the broker while a detection of that seed is not.
        # The broker is away: resend; keys make repeats harmless.
        for batch in (messages[:len(detections)], messages[len(detections):]):
            async for attempt in until_it_works(Exception, failed):
                with attempt:
                    await asyncio.gather(*(self._send(*m) for m in batch))

    async def _dead_letter(self, message: RawMessage, stage: str, exc: BaseException) -> None:
        record = dead_letter(stage=stage, error=exc, topic=message.topic, value=message.value,
                             key=message.key, partition=message.partition,
                             offset=message.offset)
        await send_dead_letter(self._send, self.topics, record)
        self.stats.dead_letters += 1

    def close(self) -> None:
        """Stop the search threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def until_it_works(errors: type[BaseException] | tuple[type[BaseException], ...],
                   before_sleep: Callable[[RetryCallState], None]) -> AsyncRetrying:
    """Retry on ``errors`` without a limit, backing off from 0.5 s to 30 s: what cannot be
    done now (model, broker) is done later, never dropped."""
    return AsyncRetrying(retry=retry_if_exception_type(errors),
                         wait=wait_exponential(multiplier=0.5, max=30.0),
                         sleep=lambda seconds: asyncio.sleep(seconds),
                         before_sleep=before_sleep, reraise=True)


def provenance_of(extractor: Extractor) -> Provenance:
    """What an extractor's queries are recorded under."""
    return Provenance(extractor.name, extractor.model_version, PROMPT_VERSION)


async def send_dead_letter(send: Send, topics: Topics, record: DeadLetter) -> None:
    """Publish a dead-letter record keyed by where the message came from (dedupes replays)."""
    await send(topics.dead_letter, DEAD_LETTER.key(record).encode(), encode(record))
    log.warning("dead letter from %s[%s]@%s at %s: %s", record.topic, record.partition,
                record.offset, record.stage, record.error)

