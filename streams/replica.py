"""The replica stage: the worker's copy of shared state. Every listing in the search index,
every confirmed toxic id, every (seed, model version) already explored, and the standing
queries with the moderation decisions on what they found.

Seeds are split across workers by the consumer group, but each worker must search all
listings. Two loops feed the replica, each with a consumer of its own:

* the listings feeder applies ``listings`` to the index. With a worker's own index (Tantivy)
  it reads *all* partitions (manual assignment, no group); with a shared index (OpenSearch,
  ``SearchIndex.shared``) the workers' feeders are one consumer group (``<app id>.index``),
  each applying its share, and every worker waits on the positions the index stores for
  all. Either way the positions are committed *inside* the index (``SearchIndex.commit``),
  after the writes, by one rule (:class:`CommitPolicy`), so a restarted worker resumes from
  its last index commit: no gap, no full replay; a member that loses partitions in a
  rebalance commits them first.
* the ledger reader re-reads the small topics from the start on every start:
  ``toxic-items`` and the keys of ``search-feedback`` into the :class:`Ledger`,
  ``standing-queries`` and ``moderation-decisions`` into the ``StandingBook``.

:meth:`Replica.wait_caught_up` is what a seed waits on: everything published before it
applied, listings committed and searchable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from agents.explore import Ledger
from agents.standing import StandingBook
from qexplorer.config import IndexSettings, KafkaSettings, Settings
from qexplorer.kafka import clients
from qexplorer.kafka.io import topic_partitions
from qexplorer.search.protocol import Change, SearchIndex
from schemas.codec import SchemaError, dead_letter, decode
from schemas.models import (
    DeadLetter,
    ListingEvent,
    ModerationDecision,
    StandingQuery,
    ToxicItem,
)
from schemas.topics import Topics

log = logging.getLogger(__name__)

DeadLetterSink = Callable[[DeadLetter], Awaitable[None]]
#: How long a fetch waits for data. Measured: with aiokafka's default 500 ms a seed waiting
#: for the feedback and toxic items it just caused to be read waited ~0.5 s a batch (27 vs 130
#: seeds/s).
FETCH_WAIT_MS = 50


@dataclass
class ReplicaStats:
    """Counters a worker reports."""

    listings_applied: int = 0
    listings_dead: int = 0
    commits: int = 0
    last_commit_at: float = 0.0
    confirmed: int = 0
    explored: int = 0
    standing: int = 0  # standing-query records read
    decisions: int = 0  # moderation decisions read
    unreadable: int = 0  # standing-query or decision records that break their contract
    documents: int | None = None  # a shared index's listings at this replica's last commit
    positions: dict[str, dict[int, int]] = field(default_factory=dict)


@dataclass
class CommitPolicy:
    """When the listings feeder commits its positions into the index: when something is
    uncommitted (writes pending, or positions moved past dead letters) and either the commit
    interval has passed, ``commit_docs`` writes are pending, or a waiting seed needs what it
    applied (it should not wait for the interval)."""

    interval_s: float
    max_pending: int
    last: float = field(default_factory=time.monotonic)

    def due(self, *, pending: int, moved: bool, wanted: bool, now: float) -> bool:
        """True when a commit is due now."""
        if not (pending or moved):
            return False
        return now - self.last >= self.interval_s or pending >= self.max_pending or wanted

    def done(self, now: float) -> None:
        """A commit went through at ``now``."""
        self.last = now


class Replica:
    """Consumes listings, toxic-items and search-feedback in full and keeps them queryable."""

    name = "replica"
    essential = True

    @classmethod
    def of(cls, settings: Settings, index: SearchIndex, dead_letters: DeadLetterSink,
           book: StandingBook | None) -> Replica:
        """A worker's replica: its index, its dead-letter sink and (standing queries on) its
        standing book; a shared index is fed as the group ``<app id>.index``."""
        return cls(settings.kafka, settings.topics, settings.index, index, dead_letters,
                   standing=book, group=f"{settings.worker.app_id}.index",
                   session_timeout_s=settings.worker.session_timeout_s)

    def __init__(self, kafka: KafkaSettings, topics: Topics, settings: IndexSettings,
                 index: SearchIndex, dead_letters: DeadLetterSink,
                 standing: StandingBook | None = None, group: str = "qexplorer.index",
                 session_timeout_s: float = 10.0) -> None:
        """``standing``: the book to keep the standing queries and decisions in (None: those
        topics are not read). ``group``: the consumer group feeding a shared index."""
        self.kafka = kafka
        self.group = group
        self.session_timeout_s = session_timeout_s
        self.topics = topics
        self.settings = settings
        self.index = index
        self.ledger = Ledger()
        self.standing = standing
        self.stats = ReplicaStats()
        self._dead_letters = dead_letters
        self._reader: AIOKafkaConsumer | None = None  # the ledger's; asked for end offsets
        self._positions: dict[TopicPartition, int] = {}  # next offset, every partition read
        self._stored: dict[TopicPartition, int] = {}  # listings positions the index holds
        # what a waiting seed needs searchable: commit as soon as it is applied, instead of
        # at the next commit interval (seeds would wait up to that long)
        self._wanted: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()
        self._started = asyncio.Event()
        self._listing_partitions: list[TopicPartition] = []

    # --- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Feed the index and read the ledger until cancelled; the last index commit happens
        on the way out."""
        topics = self.topics
        reader = clients.reader(self.kafka, max_records=self.settings.fetch_records,
                                wait_ms=FETCH_WAIT_MS)
        self._reader = reader
        await reader.start()
        try:
            ledger = []
            extra = (topics.standing, topics.decisions) if self.standing is not None else ()
            for topic in (topics.listings, topics.toxic_items, topics.feedback, *extra):
                found = await topic_partitions(reader, topic)
                if not found:
                    raise RuntimeError(f"topic {topic!r} does not exist: "
                                       "create it first (qexplorer topics create)")
                if topic == topics.listings:
                    self._listing_partitions = found
                else:
                    ledger += found
            reader.assign(ledger)
            await reader.seek_to_beginning(*ledger)
            self._started.set()
            feeding = asyncio.ensure_future(self._feed())
            reading = asyncio.ensure_future(self._read_ledger(reader))
            try:  # either failing stops the replica
                done, _ = await asyncio.wait({feeding, reading},
                                             return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()
            finally:
                for task in (feeding, reading):
                    task.cancel()
                await asyncio.gather(feeding, reading, return_exceptions=True)
        finally:
            await reader.stop()

    async def _read_ledger(self, reader: AIOKafkaConsumer) -> None:
        """Apply the small topics as they come (from the start on every start)."""
        topics = self.topics
        while True:
            batches = await reader.getmany(timeout_ms=100,
                                           max_records=self.settings.fetch_records)
            for tp, messages in batches.items():
                if tp.topic == topics.toxic_items:
                    self._apply_toxic(messages)
                elif tp.topic == topics.feedback:
                    self.ledger.mark_explored(m.key.decode("utf-8", "replace")
                                              for m in messages if m.key is not None)
                    self.stats.explored = self.ledger.explored_count
                elif tp.topic == topics.standing and self.standing is not None:
                    self.stats.standing += self._apply_to_book(messages, StandingQuery,
                                                               self.standing.put)
                elif tp.topic == topics.decisions and self.standing is not None:
                    self.stats.decisions += self._apply_to_book(messages, ModerationDecision,
                                                                self.standing.decide)
                if messages:
                    self._positions[tp] = messages[-1].offset + 1
            if batches:
                await self._notify()

    async def _feed(self) -> None:
        """Apply listings to the index and commit their positions inside it (one rule,
        :class:`CommitPolicy`): all partitions on a worker's own index, this member's share
        of the group on a shared one."""
        shared = self.index.shared
        if shared:
            consumer = clients.member(self.kafka, self.group,
                                      session_timeout_s=self.session_timeout_s,
                                      max_records=self.settings.fetch_records,
                                      wait_ms=FETCH_WAIT_MS)
        else:
            consumer = clients.reader(self.kafka, max_records=self.settings.fetch_records,
                                      wait_ms=FETCH_WAIT_MS)
        await consumer.start()
        policy = CommitPolicy(self.settings.commit_interval_s, self.settings.commit_docs)
        try:
            if shared:
                consumer.subscribe([self.topics.listings], listener=_Handover(self, consumer))
            else:
                consumer.assign(self._listing_partitions)
                await self._take(consumer, self._listing_partitions)
            while True:
                batches = await consumer.getmany(timeout_ms=100,
                                                 max_records=self.settings.fetch_records)
                # only what this feeder owns and has not applied yet: a rebalance during the
                # last apply seeks back to the stored position, and the fetch after it repeats
                # messages already applied (their dead letters would be sent twice)
                fetched = []
                for tp, messages in batches.items():
                    new = [m for m in messages if m.offset >= self._positions.get(tp, 1 << 62)]
                    if new:
                        fetched.append((tp, new))
                # one hand-off to the indexing thread a fetch, not one a partition
                dead = await asyncio.to_thread(self._apply_fetched, fetched) if fetched else []
                owned = consumer.assignment()  # a rebalance may have taken some meanwhile
                for tp, messages in fetched:
                    if tp in owned:
                        self._positions[tp] = messages[-1].offset + 1
                for record in dead:
                    await self._dead_letters(record)
                mine = {tp: end for tp, end in self._wanted.items() if tp in owned}
                reached = [tp for tp, end in mine.items() if self._positions.get(tp, -1) >= end]
                now = time.monotonic()
                if policy.due(pending=self.index.pending, moved=bool(self._moved(owned)),
                              wanted=bool(mine) and len(reached) == len(mine), now=now):
                    await self._commit({tp: self._positions[tp] for tp in owned
                                        if tp in self._positions}, consumer)
                    policy.done(time.monotonic())
                if len(reached) == len(mine):
                    for tp in reached:
                        self._wanted.pop(tp, None)
                if fetched:
                    await self._notify()
        finally:
            try:
                owned = consumer.assignment()
                if self.index.pending or self._moved(owned):
                    await self._commit({tp: self._positions[tp] for tp in owned
                                        if tp in self._positions}, None)
            finally:
                await consumer.stop()

    async def _take(self, consumer: AIOKafkaConsumer, partitions) -> None:
        """Start listings ``partitions`` where the index's last commit left them (from the
        beginning where it holds none)."""
        held = (await asyncio.to_thread(self.index.committed_offsets)
                ).get(self.topics.listings, {})
        for tp in partitions:
            if tp.partition in held:
                consumer.seek(tp, held[tp.partition])
                self._positions[tp] = self._stored[tp] = held[tp.partition]
            else:
                await consumer.seek_to_beginning(tp)
                self._positions[tp] = 0
        log.info("indexing listings partitions %s from %s (%d listings in the index)",
                 sorted(tp.partition for tp in partitions), held,
                 await asyncio.to_thread(self.index.count))

    def _moved(self, partitions) -> dict[TopicPartition, int]:
        """Listings positions past what the index holds (applied or dead-lettered since)."""
        return {tp: self._positions[tp] for tp in partitions
                if tp in self._positions and self._positions[tp] != self._stored.get(tp)}

    async def _commit(self, positions: dict[TopicPartition, int],
                      group: AIOKafkaConsumer | None) -> None:
        """Commit the writes and ``positions`` inside the index (searchable once it returns),
        then, feeding a shared index, in the group too (for the operators' lag tools)."""
        await asyncio.to_thread(self._commit_index, positions)
        if group is not None and self.index.shared and positions:
            try:
                await group.commit(positions)
            except KafkaError as exc:  # the index holds the positions that count
                log.warning("committing the indexers' group position failed: %s", exc)
        await self._notify()

    def _commit_index(self, positions: dict[TopicPartition, int]) -> None:
        offsets = {self.topics.listings: {tp.partition: pos for tp, pos in positions.items()}}
        self.index.commit(offsets)
        self._stored.update(positions)
        if self.index.shared:
            try:  # here, not in the metrics: no I/O there
                self.stats.documents = self.index.count()
            except Exception as exc:  # only a figure: the commit itself went through
                log.warning("counting the shared index failed: %s", exc)
        self.stats.commits += 1
        self.stats.last_commit_at = time.time()
        self.stats.positions = offsets

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    def _apply_fetched(self, fetched) -> list[DeadLetter]:
        return [d for tp, messages in fetched for d in self._apply_listings(tp, messages)]

    def _apply_listings(self, tp: TopicPartition, messages) -> list[DeadLetter]:
        dead = []
        changes = []
        for message in messages:
            try:
                event = decode(ListingEvent, message.value)
                if message.key is not None and message.key != event.id.encode():
                    raise SchemaError(f"message key {message.key!r} is not the listing id")
            except SchemaError as exc:
                dead.append(dead_letter(stage="decode-listing", error=str(exc), topic=tp.topic,
                                        value=message.value, key=message.key,
                                        partition=tp.partition, offset=message.offset))
                continue
            changes.append(Change(event, message.value, (tp.partition, message.offset)))
        self.index.apply(changes)
        self.stats.listings_applied += len(changes)
        self.stats.listings_dead += len(dead)
        return dead

    def _apply_toxic(self, messages) -> None:
        # Bad toxic items are dead-lettered once, by the explorer that owns the partition.
        for message in messages:
            try:
                self.ledger.confirm_item(decode(ToxicItem, message.value))
            except SchemaError:
                continue
        self.stats.confirmed = len(self.ledger.confirmed)

    def _apply_to_book(self, messages, contract, apply) -> int:
        """Decode each message as ``contract`` and ``apply`` it to the standing book; returns
        how many were read."""
        for message in messages:
            try:
                apply(decode(contract, message.value))
            except SchemaError as exc:
                self._unreadable(message, exc)
        return len(messages)

    def _unreadable(self, message, exc: SchemaError) -> None:
        # these topics' writers (workers, the review service, the CLI) validate what they
        # write; a record that still breaks the contract is skipped here and counted
        self.stats.unreadable += 1
        log.warning("skipping unreadable %s[%s]@%s: %s", message.topic, message.partition,
                    message.offset, exc)

    # --- progress ----------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True once the replica consumes (its partitions are known)."""
        return self._started.is_set()

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        """The end offsets of one of the replica's topics."""
        reader = self._reader
        if reader is None or not self.started:
            return {}
        partitions = [tp for tp in self._watched(reader) if tp.topic == topic]
        return await reader.end_offsets(partitions) if partitions else {}

    async def lag(self) -> dict[str, int]:
        """Messages published but not yet applied, by topic (listings: not yet committed,
        i.e. not yet searchable)."""
        reader = self._reader
        if reader is None or not self.started:
            return {}
        listings = self.topics.listings
        committed = (await asyncio.to_thread(self.index.committed_offsets)).get(listings, {})
        out: dict[str, int] = {}
        for tp, end in (await reader.end_offsets(self._watched(reader))).items():
            done = committed.get(tp.partition, 0) if tp.topic == listings \
                else self._positions.get(tp, 0)
            out[tp.topic] = out.get(tp.topic, 0) + max(0, end - done)
        return out

    def _watched(self, reader: AIOKafkaConsumer) -> list[TopicPartition]:
        """The partitions whose progress the replica reports: the ledger's and the
        listings'."""
        return list(set(reader.assignment()) | set(self._listing_partitions))

    # --- waiting -----------------------------------------------------------------------------

    def _caught_up_to(self, targets: dict[TopicPartition, int],
                      committed: dict[int, int]) -> bool:
        for tp, end in targets.items():
            if tp.topic == self.topics.listings:
                if committed.get(tp.partition, 0) < end:
                    return False
            elif self._positions.get(tp, 0) < end:
                return False
        return True

    def _shared_caught_up(self, targets: dict[TopicPartition, int]) -> bool:
        """Caught up by what the shared index stores for every feeder."""
        try:
            committed = self.index.committed_offsets().get(self.topics.listings, {})
        except Exception as exc:  # the cluster away: not caught up yet (the wait has a limit)
            log.warning("reading the shared index's positions failed: %s", exc)
            return False
        return self._caught_up_to(targets, committed)

    async def wait_caught_up(self, timeout_s: float, urgent: bool = True) -> bool:
        """Wait until everything published before this call is applied (listings: committed
        and searchable). Returns False on timeout; the caller goes on with what it has.
        ``urgent``: commit as soon as the listings are applied (a seed waiting), rather than
        at the next commit interval (the watcher: every batch asking for a commit of its
        own would halve the indexing rate at 5,000 listings/s)."""
        await self._started.wait()
        reader = self._reader
        assert reader is not None
        targets = await reader.end_offsets(self._watched(reader))
        listings = self.topics.listings
        for tp, end in targets.items():
            if urgent and tp.topic == listings and self._stored.get(tp, 0) < end:
                self._wanted[tp] = max(end, self._wanted.get(tp, 0))
        deadline = time.monotonic() + timeout_s
        if self.index.shared:  # other workers index too: poll what the index stores
            while not await asyncio.to_thread(self._shared_caught_up, targets):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                await asyncio.sleep(min(remaining, 0.05))
            return True
        stored = {tp.partition: pos for tp, pos in self._stored.items()}  # a live view below
        async with self._progress:
            while not self._caught_up_to(targets, stored):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), timeout=min(remaining, 0.5))
                stored = {tp.partition: pos for tp, pos in self._stored.items()}
        return True


class _Handover(ConsumerRebalanceListener):
    """A shared index's feeder in a rebalance: partitions it loses are committed first (their
    next owner starts there), partitions it gains start where the index left them."""

    def __init__(self, replica: Replica, consumer: AIOKafkaConsumer) -> None:
        self.replica = replica
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked) -> None:
        replica = self.replica
        mine = replica._moved(revoked)
        if replica.index.pending or mine:
            await replica._commit({tp: replica._positions[tp] for tp in revoked
                                   if tp in replica._positions}, None)
        for tp in revoked:
            replica._positions.pop(tp, None)
            replica._stored.pop(tp, None)

    async def on_partitions_assigned(self, assigned) -> None:
        await self.replica._take(self.consumer, assigned)
