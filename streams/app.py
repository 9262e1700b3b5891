"""The faust application: topics, the explorer agent and the replica task, wired from Settings.

``create_worker(settings)`` builds everything (the replica task, the model-rollouts follower
and the explorer agent); nothing here runs at import time and no address is
hard-coded. The agent is deliberately thin: it hands batches of raw messages to
``agents.explorer.Explorer``, which holds the logic.

Why concurrency 1 with batches: faust-streaming bug #606 can commit an offset past a message
still in flight when agent concurrency > 1 (see ../shared/ENGINEERING.md §3); the batch gives
parallelism inside the handler instead, and its events are acknowledged only after the handler
returns.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys

import faust

from agents.explorer import Explorer, RawMessage, send_dead_letter
from agents.extractor.factory import build_extractor
from agents.extractor.keywords import KeywordsExtractor
from agents.index import ListingIndex, open_or_rebuild
from agents.replica import Replica
from agents.rollout import RolloutFollower
from streams.metrics import WorkerMetrics, logging_config, serve
from streams.settings import ExtractorBackend, SecurityProtocol, Settings

log = logging.getLogger(__name__)


def _credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    protocol = settings.kafka_security_protocol
    context = None
    if protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
        cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        context = ssl.create_default_context(cafile=cafile)
    if protocol is SecurityProtocol.SSL:
        return faust.SSLCredentials(context)
    if protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    return None


class Worker:
    """The parts of one running worker, reachable for tests and metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.worker_dir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            settings.app_id,
            broker=[f"kafka://{b.strip()}" for b in settings.bootstrap.split(",")],
            broker_credentials=_credentials(settings),
            store="memory://",
            datadir=str(settings.worker_dir / "faust"),
            web_enabled=settings.web_enabled,
            web_bind=settings.web_host,
            web_port=settings.web_port,
            topic_partitions=settings.topic_partitions,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            broker_commit_every=1,
            broker_commit_interval=1.0,
            stream_wait_empty=False,
        )
        topics = settings.topics
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
               "value_serializer": "raw", "partitions": settings.topic_partitions}
        self.toxic_items = self.app.topic(topics.toxic_items, **raw)
        self.outputs = {
            name: self.app.topic(name, **raw)
            for name in (topics.detections, topics.feedback, topics.dead_letter)
        }
        self.index: ListingIndex | None = None
        self.index_rebuilt: str | None = None  # why the index was rebuilt at start, if it was
        self.replica: Replica | None = None
        self.explorer: Explorer | None = None
        self.rollouts: RolloutFollower | None = None
        self.metrics = WorkerMetrics(self)
        self.app.task(self._run_replica)
        self.app.task(self._follow_rollouts)
        if settings.metrics_enabled:
            self.app.task(self._serve_metrics)
        self.app.agent(self.toxic_items, name="explore", concurrency=1)(self._explore)

    async def _send(self, topic: str, key: bytes, value: bytes) -> object:
        pending = await self.outputs[topic].send(key=key, value=value, force=True)
        return await pending  # resolves once the broker acknowledged the record

    async def _send_dead(self, record) -> None:
        await send_dead_letter(self._send, self.settings, record)

    def _build(self) -> None:
        if self.explorer is not None:
            return
        settings = self.settings
        sys.setswitchinterval(0.0005)  # searches release the GIL; don't make them wait 5 ms
        self.index, self.index_rebuilt = open_or_rebuild(
            settings.index_dir, heap_mb=settings.index_writer_heap_mb,
            threads=settings.index_writer_threads)
        self.replica = Replica(settings, self.index, self._send_dead)
        extractor = build_extractor(settings)
        fallback = None
        if settings.extractor is not ExtractorBackend.KEYWORDS:
            fallback = KeywordsExtractor()
        self.explorer = Explorer(settings, self.replica, extractor, self._send, fallback=fallback,
                                 observe=self.metrics.observe)
        self.rollouts = RolloutFollower(settings, self.explorer, self._send_dead)
        log.info("worker %s: extractor %s (%s), index %s with %d listings",
                 settings.worker_id, extractor.name, extractor.model_version,
                 settings.index_dir, self.index.count())

    async def _run_replica(self) -> None:
        self._build()
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
        runner = await serve(self.metrics, self.settings)
        try:
            await self.metrics.refresh_lag()
        finally:
            if runner is not None:
                await runner.cleanup()

    async def _follow_rollouts(self) -> None:
        self._build()
        assert self.rollouts is not None
        try:
            await self.rollouts.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # the current model keeps serving; rollouts need a restart
            log.exception("the model-rollouts follower stopped")

    async def _explore(self, stream) -> None:
        self._build()
        assert self.explorer is not None
        # noack_take + ack after the handler: take_events would ack a batch whose handler was
        # cancelled by a shutdown, and its seeds would never be explored.
        async for events in stream.noack_take(self.settings.explore_batch,
                                              within=self.settings.explore_batch_within_s):
            messages = [RawMessage(e.message.topic, e.message.partition, e.message.offset,
                                   e.message.key, e.message.value, e.message.timestamp)
                         for e in events]
            await self.explorer.handle(messages)
            for event in events:
                await stream.ack(event)


def create_worker(settings: Settings) -> Worker:
    """Build the faust app and its agents for these settings."""
    return Worker(settings)


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run a worker in the foreground until it is stopped (SIGTERM/SIGINT)."""
    worker = create_worker(settings)
    faust.Worker(worker.app, loglevel=loglevel, quiet=True,
                 logging_config=logging_config(settings, loglevel)).execute_from_commandline()
