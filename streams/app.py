"""The faust application: one worker's replica, explorer agent, watcher agent, rollout follower
and re-explorer, wired from the settings.

``Worker(settings)`` builds everything (the replica task, the model-rollouts follower, the
re-exploration task after a rollout, the metrics endpoint, the explorer agent on
``toxic-items`` and the watcher task on ``listings``, which matches new listings against the
standing queries); nothing here runs at import time and no address is hard-coded. Both are
deliberately thin: they hand batches of raw messages to ``agents.explorer.Explorer`` and
``agents.watcher.Watcher``, which hold the logic. At start the worker checks the live topic
configuration and refuses to run when ``listings`` would lose data.

Why the watcher reads ``listings`` with a plain aiokafka consumer (its own consumer group,
``<app id>.watch``, offsets committed after each batch is handled) and not a faust agent:
faust's per-event work took a core's share at 5,000 new listings a second and the agent fell
behind the replica (``bench/freshness.py``); the watcher needs only each message's position.

Why concurrency 1 with batches: faust-streaming bug #606 can commit an offset past a message
still in flight when agent concurrency > 1; the batch gives parallelism inside the handler
instead, and its events are acknowledged only after the handler returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from agents.explorer import Explorer, RawMessage, send_dead_letter
from agents.extractor.keywords import KeywordsExtractor
from agents.extractor.priors import WithToxic
from agents.extractor.registry import build_extractor
from agents.standing import StandingBook
from agents.watcher import Watcher
from qexplorer.config import KafkaSettings, SecurityProtocol, Settings
from qexplorer.kafka.admin import check_topics
from qexplorer.kafka.io import read_to_end
from qexplorer.search import open_replica
from qexplorer.search.protocol import SearchIndex
from schemas.topics import (
    DEAD_LETTER,
    DETECTIONS,
    SEARCH_FEEDBACK,
    STANDING_QUERIES,
    TOXIC_ITEMS,
)
from streams.metrics import Snapshot, WorkerMetrics, logging_config, serve
from streams.reexplore import Reexplorer
from streams.replica import Replica
from streams.rollouts import RolloutFollower

log = logging.getLogger(__name__)


class TopicsRefused(RuntimeError):
    """The live topics would lose data the worker depends on."""


def credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """faust's form of the Kafka security settings (the same TLS context as aiokafka's)."""
    context = kafka.ssl_context()
    if kafka.security_protocol is SecurityProtocol.SSL:
        return faust.SSLCredentials(context)
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(username=kafka.sasl_username,
                                     password=kafka.sasl_password_value(),
                                     mechanism=kafka.sasl_mechanism, ssl_context=context)
    return None


class Worker:
    """The parts of one running worker; implements ``streams.metrics.WorkerStats``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = settings.worker_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        kafka, topics = settings.kafka, settings.topics
        self.app = faust.App(
            settings.worker.app_id,
            broker=[f"kafka://{b.strip()}" for b in kafka.servers.split(",")],
            broker_credentials=credentials(kafka),
            store="memory://",
            datadir=str(self.directory / "faust"),
            web_enabled=settings.worker.web_enabled,
            web_bind=settings.worker.web_host,
            web_port=settings.worker.web_port,
            topic_partitions=settings.topic.partitions,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            broker_commit_every=1,
            broker_commit_interval=1.0,
            # a killed worker's seeds move to the others after this, not faust's 60 s
            broker_session_timeout=settings.worker.session_timeout_s,
            broker_heartbeat_interval=settings.worker.session_timeout_s / 3,
            stream_wait_empty=False,
        )

        def raw(spec):
            return self.app.topic(topics.name(spec), key_type=bytes, value_type=bytes,
                                  key_serializer="raw", value_serializer="raw",
                                  partitions=topics.partitions(spec))

        self.toxic_items = raw(TOXIC_ITEMS)
        self.outputs = {topics.name(spec): raw(spec) for spec in
                        (DETECTIONS, SEARCH_FEEDBACK, DEAD_LETTER, STANDING_QUERIES)}
        self.index: SearchIndex | None = None
        self.index_rebuilt: str | None = None  # why the index was rebuilt at start, if it was
        self.replica: Replica | None = None
        self.explorer: Explorer | None = None
        self.watcher: Watcher | None = None
        self.rollouts: RolloutFollower | None = None
        self.reexplorer: Reexplorer | None = None
        self.exploring = asyncio.Lock()  # new seeds and re-explorations take turns
        self.metrics = WorkerMetrics(self)
        self._building: asyncio.Future | None = None
        self.app.task(self._run_replica)
        self.app.task(self._follow_rollouts)
        self.app.task(self._reexplore)
        if settings.metrics.enabled:
            self.app.task(self._serve_metrics)
        self.app.agent(self.toxic_items, name="explore", concurrency=1)(self._explore)
        if settings.standing.enabled:
            self.app.task(self._watch)
            self.app.timer(1.0)(self._catch_up)

    async def _send(self, topic: str, key: bytes, value: bytes) -> object:
        pending = await self.outputs[topic].send(key=key, value=value, force=True)
        return await pending  # resolves once the broker acknowledged the record

    async def _send_dead(self, record) -> None:
        await send_dead_letter(self._send, self.settings.topics, record)

    async def _build(self) -> None:
        """Wait until the worker is built (the first caller builds it; every task waits)."""
        if self._building is None:
            self._building = asyncio.ensure_future(self._build_once())
        await asyncio.shield(self._building)

    async def _build_once(self) -> None:
        """Check the topics, open the index, build the agents."""
        settings = self.settings
        try:
            check = await check_topics(settings.kafka, settings.topics)
            for warning in check.warnings:
                log.warning("topic configuration differs from the registry: %s", warning)
            if not check.ok:
                raise TopicsRefused(
                    "refusing to run: " + "; ".join(check.refusals) + ". Set it with "
                    "kafka-configs.sh --alter --entity-type topics --entity-name "
                    f"{settings.topics.listings} --add-config cleanup.policy=compact")
            sys.setswitchinterval(0.0005)  # searches release the GIL; don't make them wait 5 ms
            self.index, self.index_rebuilt = await asyncio.to_thread(
                open_replica, settings.index, self.directory, settings.opensearch,
                settings.topics.listings)
            book = StandingBook(settings.standing) if settings.standing.enabled else None
            self.replica = Replica(settings.kafka, settings.topics, settings.index, self.index,
                                   self._send_dead, standing=book,
                                   group=f"{settings.worker.app_id}.index",
                                   session_timeout_s=settings.worker.session_timeout_s)
            extractor = build_extractor(settings.extractor,
                                        WithToxic(self.index, self.replica.ledger.terms))
            fallback = None if settings.extractor.backend == "keywords" else KeywordsExtractor()
            self.explorer = Explorer(settings.exploration, settings.topics, self.replica,
                                     extractor, self._send, fallback=fallback,
                                     observe=self.metrics.observe, standing=settings.standing)
            if book is not None:
                exploration = settings.exploration
                self.watcher = Watcher(settings.standing, settings.topics, self.replica, book,
                                       self._send, wait_index_s=exploration.wait_index_s,
                                       search_threads=exploration.search_threads,
                                       observe=self.metrics.observe)
            replica = self.replica
            self.reexplorer = Reexplorer(
                settings.exploration, self.explorer, self.exploring, self._read_since,
                self._assigned,
                ready=lambda: replica.wait_caught_up(settings.exploration.wait_index_s))
            self.rollouts = RolloutFollower(settings.kafka, settings.topics, settings.extractor,
                                            self.explorer, self._send_dead,
                                            on_switch=self.reexplorer.request)
        except Exception as exc:
            log.error("the worker cannot start: %s", exc)
            await self.app.crash(exc)
            raise
        log.info("worker %s: extractor %s (%s), %s index with %d listings",
                 settings.worker.worker_id, extractor.name, extractor.model_version,
                 settings.index.backend, await asyncio.to_thread(self.index.count))

    async def _run_replica(self) -> None:
        await self._build()
        assert self.replica is not None
        try:
            await self.replica.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("replica stopped: the worker cannot serve without its index")
            await self.app.crash(RuntimeError("replica failed"))
            raise

    async def _serve_metrics(self) -> None:
        runner = await serve(self.metrics, self.settings.metrics)
        try:
            await self.metrics.refresh_lag()
        finally:
            if runner is not None:
                await runner.cleanup()

    async def _follow_rollouts(self) -> None:
        await self._build()
        assert self.rollouts is not None
        try:
            await self.rollouts.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # the current model keeps serving; rollouts need a restart
            log.exception("the model-rollouts follower stopped")

    async def _reexplore(self) -> None:
        await self._build()
        assert self.reexplorer is not None
        await self.reexplorer.serve()

    async def _read_since(self, partitions: set[int], since_ms: int) -> list[RawMessage]:
        found = await read_to_end(self.settings.kafka, self.settings.topics.toxic_items,
                                  since_ms=since_ms, only=partitions)
        # no timestamp: a re-explored seed does not count in the seed-to-detection latency
        return [RawMessage(m.topic, m.partition, m.offset, m.key, m.value) for m in found]

    def _assigned(self) -> set[int]:
        """The toxic-items partitions this worker's explorer owns now."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # the consumer is not up yet
            return set()
        return {tp.partition for tp in assignment if tp.topic == self.settings.topics.toxic_items}

    async def _explore(self, stream) -> None:
        await self._build()
        assert self.explorer is not None
        batch = self.settings.exploration
        # noack_take + ack after the handler: take_events would ack a batch whose handler was
        # cancelled by a shutdown, and its seeds would never be explored.
        async for events in stream.noack_take(batch.batch, within=batch.batch_within_s):
            messages = [RawMessage(e.message.topic, e.message.partition, e.message.offset,
                                   e.message.key, e.message.value, e.message.timestamp)
                        for e in events]
            async with self.exploring:
                await self.explorer.handle(messages)
            for event in events:
                await stream.ack(event)

    @property
    def watch_group(self) -> str:
        """The consumer group the watchers share ``listings`` in."""
        return f"{self.settings.worker.app_id}.watch"

    async def _watch(self) -> None:
        await self._build()
        watcher = self.watcher
        assert watcher is not None
        settings = self.settings
        consumer = AIOKafkaConsumer(
            settings.topics.listings, **settings.kafka.client_kwargs(),
            group_id=self.watch_group, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=settings.standing.batch,
            fetch_max_wait_ms=int(settings.standing.batch_within_s * 1000),
            fetch_max_bytes=32 * 1024 * 1024,
            session_timeout_ms=int(settings.worker.session_timeout_s * 1000),
            heartbeat_interval_ms=int(settings.worker.session_timeout_s * 1000 / 3))
        await consumer.start()
        try:
            while True:
                fetched = await consumer.getmany(timeout_ms=1000,
                                                 max_records=settings.standing.batch)
                messages = [RawMessage(m.topic, m.partition, m.offset, m.key, None,
                                       m.timestamp / 1000 if m.timestamp else None)
                            for records in fetched.values() for m in records]
                if not messages:
                    continue
                await watcher.handle(messages)
                # committed once the batch's detections are on the broker: a crash repeats
                try:
                    await consumer.commit({tp: records[-1].offset + 1
                                           for tp, records in fetched.items() if records})
                except KafkaError as exc:  # a rebalance or the broker away: whoever reads
                    # these partitions next matches the batch again (same detection keys)
                    log.warning("committing the watcher's position failed: %s", exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the watcher stopped: new listings are not matched")
            await self.app.crash(RuntimeError("watcher failed"))
            raise
        finally:
            await consumer.stop()

    async def _catch_up(self) -> None:
        await self._build()
        if self.watcher is None:
            return
        try:
            await self.watcher.catch_up()
        except Exception:  # the next tick tries again; nothing is acknowledged by it
            log.exception("catching the standing queries up failed")

    # --- streams.metrics.WorkerStats ----------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The worker's counters and state now."""
        explorer, replica, index = self.explorer, self.replica, self.index
        dead: dict[str, int] = {}
        if explorer is not None:
            dead["toxic-items"] = explorer.stats.dead_letters
        if replica is not None:
            dead["listings"] = replica.stats.listings_dead
        if self.rollouts is not None:
            dead["model-rollouts"] = self.rollouts.refused
        return Snapshot(
            worker_id=self.settings.worker.worker_id,
            replica_running=replica is not None and replica.started,
            replica=replica.stats if replica is not None else None,
            explorer=explorer.stats if explorer is not None else None,
            watcher=self.watcher.stats if self.watcher is not None else None,
            standing_active=(len(self.watcher.book.active())
                             if self.watcher is not None else None),
            extractor=explorer.extractor.name if explorer is not None else None,
            model_version=explorer.extractor.model_version if explorer is not None else None,
            failing_streak=explorer.failing_streak if explorer is not None else 0,
            index_documents=self._documents(),
            index_bytes=(_dir_bytes(self.directory / "index")
                         if index is not None and not index.shared else None),
            dead_letters=dead)

    def _documents(self) -> int | None:
        """Listings in the index: a worker's own counts its copy; a shared one's count is
        the replica's, read at its last commit (no request to the cluster from here)."""
        if self.index is None:
            return None
        if not self.index.shared:
            return self.index.count()
        return self.replica.stats.documents if self.replica is not None else None

    async def lag(self) -> dict[str, int]:
        """Listings behind the index (not yet searchable), seeds behind the explorers' group,
        new listings not yet matched against the standing queries."""
        replica = self.replica
        if replica is None or not replica.started:
            return {}
        settings = self.settings
        lag = {f"replica/{topic.removeprefix(settings.topic.prefix)}": value
               for topic, value in (await replica.lag()).items()}
        admin = AIOKafkaAdminClient(**settings.kafka.client_kwargs())
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(settings.worker.app_id)
            watching = (await admin.list_consumer_group_offsets(self.watch_group)
                        if self.watcher is not None else None)
        finally:
            await admin.close()

        def behind(ends, committed) -> int:
            return sum(max(0, end - (committed[tp].offset if tp in committed else 0))
                       for tp, end in ends.items())

        lag["explorer/toxic-items"] = behind(
            await replica.end_offsets(settings.topics.toxic_items), committed)
        if watching is not None:
            lag["watcher/listings"] = behind(
                await replica.end_offsets(settings.topics.listings), watching)
        return lag


def _dir_bytes(path: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):  # files come and go while the index merges
        for file in path.rglob("*"):
            with contextlib.suppress(OSError):
                total += file.stat().st_size if file.is_file() else 0
    return total


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run a worker in the foreground until it is stopped (SIGTERM/SIGINT)."""
    worker = Worker(settings)
    faust.Worker(worker.app, loglevel=loglevel, quiet=True,
                 logging_config=logging_config(settings.worker, loglevel)
                 ).execute_from_commandline()
