"""The faust application: one worker's replica, explorer agent, rollout follower and
re-explorer, wired from the settings.

``Worker(settings)`` builds everything (the replica task, the model-rollouts follower, the
re-exploration task after a rollout, the metrics endpoint and the explorer agent); nothing here
runs at import time and no address is hard-coded. The agent is deliberately thin: it hands
batches of raw messages to ``agents.explorer.Explorer``, which holds the logic. At start the
worker checks the live topic configuration and refuses to run when ``listings`` would lose
data.

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
from aiokafka.admin import AIOKafkaAdminClient

from agents.explorer import Explorer, RawMessage, send_dead_letter
from agents.extractor.keywords import KeywordsExtractor, WithToxic
from agents.extractor.registry import build_extractor
from config import KafkaSettings, SecurityProtocol, Settings
from schemas.topics import DEAD_LETTER, DETECTIONS, SEARCH_FEEDBACK, TOXIC_ITEMS
from search import open_replica
from search.protocol import SearchIndex
from streams.client import read_to_end
from streams.metrics import Snapshot, WorkerMetrics, logging_config, serve
from streams.reexplore import Reexplorer
from streams.replica import Replica
from streams.rollouts import RolloutFollower
from streams.topics import check_topics

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
        self.outputs = {topics.name(spec): raw(spec)
                        for spec in (DETECTIONS, SEARCH_FEEDBACK, DEAD_LETTER)}
        self.index: SearchIndex | None = None
        self.index_rebuilt: str | None = None  # why the index was rebuilt at start, if it was
        self.replica: Replica | None = None
        self.explorer: Explorer | None = None
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
            self.index, self.index_rebuilt = open_replica(settings.index, self.directory)
            self.replica = Replica(settings.kafka, settings.topics, settings.index, self.index,
                                   self._send_dead)
            extractor = build_extractor(settings.extractor,
                                        WithToxic(self.index, self.replica.ledger.terms))
            fallback = None if settings.extractor.backend == "keywords" else KeywordsExtractor()
            self.explorer = Explorer(settings.exploration, settings.topics, self.replica,
                                     extractor, self._send, fallback=fallback,
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
                 settings.index.backend, self.index.count())

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
            extractor=explorer.extractor.name if explorer is not None else None,
            model_version=explorer.extractor.model_version if explorer is not None else None,
            failing_streak=explorer.failing_streak if explorer is not None else 0,
            index_documents=index.count() if index is not None else None,
            index_bytes=_dir_bytes(self.directory / "index") if index is not None else None,
            dead_letters=dead)

    async def lag(self) -> dict[str, int]:
        """Listings behind the index (not yet searchable), seeds behind the explorers' group."""
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
        finally:
            await admin.close()
        ends = await replica.end_offsets(settings.topics.toxic_items)
        lag["explorer/toxic-items"] = sum(
            max(0, end - (committed[tp].offset if tp in committed else 0))
            for tp, end in ends.items())
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
