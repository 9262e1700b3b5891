"""The worker's replica of shared state: every listing in the search index, every confirmed
toxic id, every (seed, model version) already explored, and the standing queries with the
moderation decisions on what they found.

Seeds are split across workers by the consumer group, but each worker must search all
listings. With a worker's own index (Tantivy) the replica reads *all* partitions itself (manual
assignment, no group). With a shared index (OpenSearch, ``SearchIndex.shared``) the replicas
feed it as one consumer group (``<app id>.index``), each its share of the partitions, and wait
on the positions the index stores for everyone. Either way listing positions are committed
inside the index (``SearchIndex.commit``), after the writes, so a restarted worker resumes from
its last index commit: no gap, no full replay. The toxic-items and search-feedback
topics are small and re-read from the start on every start into the :class:`Ledger`;
standing-queries and moderation-decisions likewise into the ``StandingBook``.
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
from qexplorer.config import IndexSettings, KafkaSettings
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


class Replica:
    """Consumes listings, toxic-items and search-feedback in full and keeps them queryable."""

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
        self._consumer: AIOKafkaConsumer | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}  # listings positions in the last commit
        # what a waiting seed needs searchable: commit as soon as it is applied, instead of
        # at the next commit interval (seeds would wait up to that long)
        self._wanted: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()
        self._started = asyncio.Event()
        self._listing_partitions: list[TopicPartition] = []

    # --- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until cancelled; the final index commit happens on the way out."""
        topics = self.topics
        consumer = AIOKafkaConsumer(
            **self.kafka.client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.fetch_records,
            fetch_max_bytes=32 * 1024 * 1024,
            # measured: with aiokafka's default 500 ms a seed waiting for the feedback and
            # toxic items it just caused to be read waited ~0.5 s a batch (27 vs 130 seeds/s)
            fetch_max_wait_ms=50,
        )
        self._consumer = consumer
        await consumer.start()
        try:
            partitions = []
            extra = (topics.standing, topics.decisions) if self.standing is not None else ()
            for topic in (topics.listings, topics.toxic_items, topics.feedback, *extra):
                found = await topic_partitions(consumer, topic)
                if not found:
                    raise RuntimeError(f"topic {topic!r} does not exist: "
                                       "create it first (qexplorer topics create)")
                if topic == topics.listings:
                    self._listing_partitions = found
                    if self.index.shared:
                        continue  # fed by the group consumer of _feed_shared
                partitions += found
            consumer.assign(partitions)
            stored = (await asyncio.to_thread(self.index.committed_offsets)
                      ).get(topics.listings, {})
            for tp in partitions:
                if tp.topic == topics.listings and tp.partition in stored:
                    consumer.seek(tp, stored[tp.partition])
                    self._positions[tp] = self._committed[tp] = stored[tp.partition]
                else:
                    await consumer.seek_to_beginning(tp)
            log.info("replica resumes listings at %s (%d listings in the index)",
                     stored, await asyncio.to_thread(self.index.count))
            self._started.set()
            if self.index.shared:
                feeding = asyncio.ensure_future(self._feed_shared())
                looping = asyncio.ensure_future(self._loop(consumer))
                try:  # either failing stops the replica
                    done, _ = await asyncio.wait({feeding, looping},
                                                 return_when=asyncio.FIRST_EXCEPTION)
                    for task in done:
                        task.result()
                finally:
                    for task in (feeding, looping):
                        task.cancel()
                    await asyncio.gather(feeding, looping, return_exceptions=True)
            else:
                await self._loop(consumer)
        finally:
            try:
                if self.index.pending and not self.index.shared:  # the feeder commits its own
                    await asyncio.to_thread(self._commit)
            finally:
                await consumer.stop()

    async def _loop(self, consumer: AIOKafkaConsumer) -> None:
        topics = self.topics
        last_commit = time.monotonic()
        while True:
            batches = await consumer.getmany(timeout_ms=100,
                                             max_records=self.settings.fetch_records)
            fetched = [(tp, ms) for tp, ms in batches.items() if tp.topic == topics.listings]
            # one hand-off to the indexing thread a fetch, not one a partition
            dead = await asyncio.to_thread(self._apply_fetched, fetched) if fetched else []
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
            for record in dead:
                await self._dead_letters(record)
            due = time.monotonic() - last_commit >= self.settings.commit_interval_s
            full = self.index.pending >= self.settings.commit_docs
            wanted = bool(self._wanted) and all(self._positions.get(tp, 0) >= end
                                                for tp, end in self._wanted.items())
            if not self.index.shared and self._uncommitted() and (due or full or wanted):
                await asyncio.to_thread(self._commit)
                last_commit = time.monotonic()
            if wanted:
                self._wanted = {}
            if batches or due:
                async with self._progress:
                    self._progress.notify_all()

    async def _feed_shared(self) -> None:
        """Feed a shared index as one member of the consumer group ``self.group``: apply this
        member's partitions, commit them inside the index (offsets only once the writes are
        acknowledged and searchable), then in the group (for the operators' lag tools)."""
        listings = self.topics.listings
        replica = self
        positions: dict[TopicPartition, int] = {}
        stored: dict[TopicPartition, int] = {}  # the positions the index holds

        def behind(tps) -> dict[TopicPartition, int]:
            """Positions not yet stored (listings applied or dead-lettered since)."""
            return {tp: positions[tp] for tp in tps if positions[tp] != stored.get(tp)}

        async def commit(chosen: dict[TopicPartition, int]) -> None:
            await asyncio.to_thread(replica._commit_shared, chosen)
            stored.update(chosen)

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked) -> None:
                mine = {tp: pos for tp, pos in positions.items() if tp in revoked}
                if mine and (replica.index.pending or behind(mine)):
                    await commit(mine)  # hand them over committed: the next owner starts there
                for tp in revoked:
                    positions.pop(tp, None)
                    stored.pop(tp, None)

            async def on_partitions_assigned(self, assigned) -> None:
                held = (await asyncio.to_thread(
                    replica.index.committed_offsets)).get(listings, {})
                for tp in assigned:
                    if tp.partition in held:
                        consumer.seek(tp, held[tp.partition])
                        positions[tp] = stored[tp] = held[tp.partition]
                    else:
                        await consumer.seek_to_beginning(tp)
                        positions[tp] = 0
                log.info("indexing listings partitions %s from %s",
                         sorted(tp.partition for tp in assigned), held)

        consumer = AIOKafkaConsumer(
            **self.kafka.client_kwargs(), group_id=self.group, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=self.settings.fetch_records,
            fetch_max_bytes=32 * 1024 * 1024, fetch_max_wait_ms=50,
            session_timeout_ms=int(self.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self.session_timeout_s * 1000 / 3))
        await consumer.start()
        consumer.subscribe([listings], listener=Listener())
        last_commit = time.monotonic()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=100,
                                                 max_records=self.settings.fetch_records)
                # only what this member owns and has not applied yet: a rebalance during the
                # last apply seeks back to the stored position, and the fetch after it repeats
                # messages already applied (their dead letters would be sent twice)
                fetched = []
                for tp, messages in batches.items():
                    new = [m for m in messages if m.offset >= positions.get(tp, 1 << 62)]
                    if new:
                        fetched.append((tp, new))
                dead = await asyncio.to_thread(self._apply_fetched, fetched) if fetched else []
                owned = consumer.assignment()  # a rebalance may have taken some meanwhile
                for tp, messages in fetched:
                    if tp in owned:
                        positions[tp] = messages[-1].offset + 1
                for record in dead:
                    await self._dead_letters(record)
                due = time.monotonic() - last_commit >= self.settings.commit_interval_s
                full = self.index.pending >= self.settings.commit_docs
                wanted = any(positions.get(tp, -1) >= end for tp, end in self._wanted.items())
                if (self.index.pending or behind(positions)) and (due or full or wanted):
                    await commit(dict(positions))
                    last_commit = time.monotonic()
                    for tp in [tp for tp, end in self._wanted.items()
                               if positions.get(tp, -1) >= end]:
                        del self._wanted[tp]
                    try:
                        await consumer.commit(dict(positions))
                    except KafkaError as exc:  # the index holds the positions that count
                        log.warning("committing the indexers' group position failed: %s", exc)
        finally:
            try:
                if positions and (self.index.pending or behind(positions)):
                    await commit(dict(positions))
            finally:
                await consumer.stop()

    def _commit_shared(self, positions: dict[TopicPartition, int]) -> None:
        offsets = {self.topics.listings: {tp.partition: pos for tp, pos in positions.items()}}
        self.index.commit(offsets)
        try:  # here, not in the metrics: no I/O there
            self.stats.documents = self.index.count()
        except Exception as exc:  # only a figure: the commit itself went through
            log.warning("counting the shared index failed: %s", exc)
        self.stats.commits += 1
        self.stats.last_commit_at = time.time()
        self.stats.positions = offsets

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

    def _uncommitted(self) -> bool:
        """Listing events applied (or dead-lettered) since the last commit."""
        return bool(self.index.pending) or any(
            pos > self._committed.get(tp, 0) for tp, pos in self._positions.items()
            if tp.topic == self.topics.listings)

    def _commit(self) -> None:
        listings = self.topics.listings
        offsets = {listings: {tp.partition: pos for tp, pos in self._positions.items()
                              if tp.topic == listings}}
        self.index.commit(offsets)
        self._committed.update({tp: pos for tp, pos in self._positions.items()
                                if tp.topic == listings})
        self.stats.commits += 1
        self.stats.last_commit_at = time.time()
        self.stats.positions = offsets

    # --- progress ----------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True once the replica consumes (its partitions are assigned)."""
        return self._started.is_set()

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        """The end offsets of one of the replica's topics."""
        consumer = self._consumer
        if consumer is None or not self.started:
            return {}
        partitions = [tp for tp in self._watched(consumer) if tp.topic == topic]
        return await consumer.end_offsets(partitions) if partitions else {}

    async def lag(self) -> dict[str, int]:
        """Messages published but not yet applied, by topic (listings: not yet committed,
        i.e. not yet searchable)."""
        consumer = self._consumer
        if consumer is None or not self.started:
            return {}
        listings = self.topics.listings
        committed = (await asyncio.to_thread(self.index.committed_offsets)).get(listings, {})
        out: dict[str, int] = {}
        for tp, end in (await consumer.end_offsets(self._watched(consumer))).items():
            done = committed.get(tp.partition, 0) if tp.topic == listings \
                else self._positions.get(tp, 0)
            out[tp.topic] = out.get(tp.topic, 0) + max(0, end - done)
        return out

    def _watched(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """The partitions whose progress the replica reports: its own, and the listings'."""
        return list(set(consumer.assignment()) | set(self._listing_partitions))

    # --- waiting -----------------------------------------------------------------------------

    def _shared_caught_up(self, targets: dict[TopicPartition, int]) -> bool:
        try:
            return self._caught_up_to(targets)
        except Exception as exc:  # the cluster away: not caught up yet (the wait has a limit)
            log.warning("reading the shared index's positions failed: %s", exc)
            return False

    def _caught_up_to(self, targets: dict[TopicPartition, int]) -> bool:
        committed = self.index.committed_offsets().get(self.topics.listings, {})
        for tp, end in targets.items():
            if tp.topic == self.topics.listings:
                if committed.get(tp.partition, 0) < end:
                    return False
            elif self._positions.get(tp, 0) < end:
                return False
        return True

    async def wait_caught_up(self, timeout_s: float, urgent: bool = True) -> bool:
        """Wait until everything published before this call is applied (listings: committed
        and searchable). Returns False on timeout; the caller goes on with what it has.
        ``urgent``: commit as soon as the listings are applied (a seed waiting), rather than
        at the next commit interval (the watcher: every batch asking for a commit of its
        own would halve the indexing rate at 5,000 listings/s)."""
        await asyncio.wait_for(self._started.wait(), timeout=None)
        consumer = self._consumer
        assert consumer is not None
        targets = await consumer.end_offsets(self._watched(consumer))
        listings = self.topics.listings
        for tp, end in targets.items():
            if urgent and tp.topic == listings and self._committed.get(tp, 0) < end:
                self._wanted[tp] = max(end, self._wanted.get(tp, 0))
        deadline = time.monotonic() + timeout_s
        if self.index.shared:  # other workers index too: poll what the index stores
            while not await asyncio.to_thread(self._shared_caught_up, targets):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                await asyncio.sleep(min(remaining, 0.05))
            return True
        async with self._progress:
            while not self._caught_up_to(targets):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), timeout=min(remaining, 0.5))
        return True
