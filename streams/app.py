"""The faust application of one worker: its stages wired from the settings.

:func:`run_worker` first runs the start-up check (``streams.startup``: a broker, the topics,
``listings`` keeping its data) and refuses in one line when it fails; then :class:`Worker`
builds the faust app. Once it runs, the index is opened and the shared :class:`Parts` built
(the replica, ``agents.explorer.Explorer``, the producer's send, the dead-letter sink), and
every stage (``streams.stage``) runs under the same supervision: the replica, the explorer
(the faust agent on ``toxic-items``), the watcher (standing queries on new listings), the
rollout follower and the re-explorer, besides the metrics endpoint. Nothing runs at import
time and no address is hard-coded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import faust

from agents.explorer import Explorer, send_dead_letter
from agents.extractor.keywords import KeywordsExtractor
from agents.extractor.priors import WithToxic
from agents.extractor.registry import build_extractor
from agents.standing import StandingBook
from qexplorer.config import KafkaSettings, SecurityProtocol, Settings
from qexplorer.kafka import clients
from qexplorer.search import open_replica
from schemas.topics import DEAD_LETTER, DETECTIONS, SEARCH_FEEDBACK, STANDING_QUERIES, TOXIC_ITEMS
from streams.explorer import ExplorerStage
from streams.metrics import Snapshot, WorkerMetrics, logging_config, serve
from streams.reexplore import Reexplorer
from streams.replica import Replica
from streams.rollouts import RolloutFollower
from streams.stage import Parts, Stage, supervise
from streams.startup import StartupRefused, readiness
from streams.watcher import WatcherStage, watch_group

log = logging.getLogger(__name__)

#: What the worker sets before it searches: searches release the GIL, and a busy Python
#: thread would otherwise make each wait for the default 5 ms switch interval.
SWITCH_INTERVAL_S = 0.0005


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
    """The stages of one running worker; implements ``streams.metrics.WorkerStats``."""

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
        self.parts: Parts | None = None
        self.index_rebuilt: str | None = None  # why the index was rebuilt at start, if it was
        self.stages: dict[str, Stage] = {}  # by name, once built
        self.metrics = WorkerMetrics(self)
        self._building: asyncio.Future | None = None
        for name in ("replica", "rollouts", "reexplorer",
                     *(("watcher",) if settings.standing.enabled else ())):
            self.app.task(self._task(name))
        if settings.metrics.enabled:
            self.app.task(self._serve_metrics)
        self.app.agent(self.toxic_items, name="explore", concurrency=1)(self._explore)

    # --- building ------------------------------------------------------------------------------

    async def _send(self, topic: str, key: bytes, value: bytes) -> object:
        pending = await self.outputs[topic].send(key=key, value=value, force=True)
        return await pending  # resolves once the broker acknowledged the record

    async def _send_dead(self, record) -> None:
        await send_dead_letter(self._send, self.settings.topics, record)

    async def _build(self) -> Parts:
        """The worker's parts and stages (the first caller builds them; every task waits)."""
        if self._building is None:
            self._building = asyncio.ensure_future(self._build_once())
        await asyncio.shield(self._building)
        assert self.parts is not None
        return self.parts

    async def _build_once(self) -> None:
        settings = self.settings
        try:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
            index, self.index_rebuilt = await asyncio.to_thread(
                open_replica, settings.index, self.directory, settings.opensearch,
                settings.topics.listings)
            book = StandingBook(settings.standing) if settings.standing.enabled else None
            replica = Replica.of(settings, index, self._send_dead, book)
            extractor = build_extractor(settings.extractor,
                                        WithToxic(index, replica.ledger.terms))
            fallback = None if settings.extractor.backend == "keywords" else KeywordsExtractor()
            explorer = Explorer(settings.exploration, settings.topics, replica, extractor,
                                self._send, fallback=fallback, observe=self.metrics.observe,
                                standing=settings.standing)
            parts = Parts(settings=settings, index=index, replica=replica, explorer=explorer,
                          book=book, send=self._send, dead_letters=self._send_dead,
                          exploring=asyncio.Lock(), observe=self.metrics.observe,
                          assigned=self._assigned)
            reexplorer = Reexplorer.of(parts)
            self.stages = {"replica": replica, "reexplorer": reexplorer,
                           "rollouts": RolloutFollower.of(parts, on_switch=reexplorer.request)}
            if book is not None:
                self.stages["watcher"] = WatcherStage(parts)
            self.parts = parts
        except Exception as exc:
            log.error("the worker cannot start: %s", exc)
            await self.app.crash(exc)
            raise
        log.info("worker %s: extractor %s (%s), %s index with %d listings",
                 settings.worker.worker_id, extractor.name, extractor.model_version,
                 settings.index.backend, await asyncio.to_thread(index.count))

    # --- running -------------------------------------------------------------------------------

    def _task(self, name: str) -> Callable[[], Awaitable[None]]:
        """The faust task that runs stage ``name`` once the worker is built."""
        async def run_stage() -> None:
            await self._build()
            await supervise(self.stages[name], self.app.crash)
        run_stage.__qualname__ = f"Worker.stage.{name}"
        return run_stage

    async def _explore(self, stream) -> None:
        """The faust agent on ``toxic-items``: the explorer stage, fed its stream."""
        parts = await self._build()
        await supervise(ExplorerStage(parts, stream), self.app.crash)

    async def _serve_metrics(self) -> None:
        runner = await serve(self.metrics, self.settings.metrics)
        try:
            await self.metrics.refresh_lag()
        finally:
            if runner is not None:
                await runner.cleanup()

    def _assigned(self) -> set[int]:
        """The toxic-items partitions this worker's explorer owns now."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # the consumer is not up yet
            return set()
        return {tp.partition for tp in assignment if tp.topic == self.settings.topics.toxic_items}

    # --- streams.metrics.WorkerStats ----------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The worker's counters and state now."""
        parts = self.parts
        explorer = parts.explorer if parts is not None else None
        replica = parts.replica if parts is not None else None
        watching = self.stages.get("watcher")
        watcher = watching.watcher if isinstance(watching, WatcherStage) else None
        rollouts = self.stages.get("rollouts")
        dead: dict[str, int] = {}
        if explorer is not None:
            dead["toxic-items"] = explorer.stats.dead_letters
        if replica is not None:
            dead["listings"] = replica.stats.listings_dead
        if isinstance(rollouts, RolloutFollower):
            dead["model-rollouts"] = rollouts.refused
        return Snapshot(
            worker_id=self.settings.worker.worker_id,
            replica_running=replica is not None and replica.started,
            replica=replica.stats if replica is not None else None,
            explorer=explorer.stats if explorer is not None else None,
            watcher=watcher.stats if watcher is not None else None,
            standing_active=len(watcher.book.active()) if watcher is not None else None,
            extractor=explorer.extractor.name if explorer is not None else None,
            model_version=explorer.extractor.model_version if explorer is not None else None,
            failing_streak=explorer.failing_streak if explorer is not None else 0,
            index_documents=self._documents(),
            index_bytes=(_dir_bytes(self.directory / "index")
                         if parts is not None and not parts.index.shared else None),
            dead_letters=dead)

    def _documents(self) -> int | None:
        """Listings in the index: a worker's own counts its copy; a shared one's count is
        the replica's, read at its last commit (no request to the cluster from here)."""
        if self.parts is None:
            return None
        if not self.parts.index.shared:
            return self.parts.index.count()
        return self.parts.replica.stats.documents

    async def lag(self) -> dict[str, int]:
        """Listings behind the index (not yet searchable), seeds behind the explorers' group,
        new listings not yet matched against the standing queries."""
        replica = self.parts.replica if self.parts is not None else None
        if replica is None or not replica.started:
            return {}
        settings = self.settings
        lag = {f"replica/{topic.removeprefix(settings.topic.prefix)}": value
               for topic, value in (await replica.lag()).items()}
        watching = "watcher" in self.stages
        admin = clients.admin(settings.kafka)
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(settings.worker.app_id)
            watched = (await admin.list_consumer_group_offsets(
                watch_group(settings.worker.app_id)) if watching else None)
        finally:
            await admin.close()

        def behind(ends, committed) -> int:
            return sum(max(0, end - (committed[tp].offset if tp in committed else 0))
                       for tp, end in ends.items())

        lag["explorer/toxic-items"] = behind(
            await replica.end_offsets(settings.topics.toxic_items), committed)
        if watched is not None:
            lag["watcher/listings"] = behind(
                await replica.end_offsets(settings.topics.listings), watched)
        return lag


def _dir_bytes(path: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):  # files come and go while the index merges
        for file in path.rglob("*"):
            with contextlib.suppress(OSError):
                total += file.stat().st_size if file.is_file() else 0
    return total


def check_startup(settings: Settings) -> list[str]:
    """The start-up check (``streams.startup``): raises :class:`StartupRefused` with the
    reason when the worker must not start; returns the warnings."""
    found = asyncio.run(readiness(settings))
    if found.refusals:
        raise StartupRefused("; ".join(found.refusals))
    return found.warnings


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run a worker in the foreground until it is stopped (SIGTERM/SIGINT). Raises
    :class:`StartupRefused` before anything starts when the start-up check fails."""
    for warning in check_startup(settings):
        print(f"warning: topic configuration differs from the registry: {warning}",
              file=sys.stderr, flush=True)
    worker = Worker(settings)
    faust.Worker(worker.app, loglevel=loglevel, quiet=True,
                 logging_config=logging_config(settings.worker, loglevel)
                 ).execute_from_commandline()
