"""The worker's operational surface: Prometheus metrics, a health endpoint, structured logs.

:class:`WorkerMetrics` owns a registry per worker. Counters the agents already keep
(:class:`agents.explorer.ExplorerStats`, :class:`agents.replica.ReplicaStats`) are read at
scrape time by a collector, so the logic never depends on Prometheus; latencies are
histograms fed through :meth:`WorkerMetrics.observe`; consumer lag is refreshed in the
background (it needs broker round trips, which a scrape must not wait for).

:func:`serve` runs ``GET /metrics`` and ``GET /health`` on aiohttp inside the worker's event
loop, bound to ``metrics_host`` (localhost unless configured). ``/health`` answers 200 when
the replica runs and the extractor is not failing, else 503, with the reasons as JSON.

:func:`logging_config` is the ``logging.config.dictConfig`` of the worker: text, or one JSON
object a line (python-json-logger) with ``QEXPLORER_LOG_FORMAT=json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streams.settings import Settings

if TYPE_CHECKING:
    from streams.app import Worker

log = logging.getLogger(__name__)

#: Extraction of one batch and confirmation-to-detection, in seconds.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: The extractor counts as failing after this many errors without a success in between.
FAILING_AFTER = 3


class WorkerMetrics:
    """Metrics of one worker process."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "qexplorer_latency_seconds", "Stages of exploration: wait_index, extract and "
            "search (a batch), emit (a seed), seed_to_detection (a seed's message reaching "
            "the broker to its detections being acknowledged).",
            ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.lag: dict[str, int] = {}
        self.started_at = time.time()
        self.registry.register(_StatsCollector(self))

    def observe(self, stage: str, seconds: float) -> None:
        """Record a latency sample."""
        self.latency.labels(stage).observe(seconds)

    def scrape(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)

    def health(self) -> tuple[bool, dict]:
        """(healthy, details) for ``/health``."""
        w = self.worker
        reasons = []
        replica_ok = w.replica is not None and w.replica.started
        if not replica_ok:
            reasons.append("the index replica is not running")
        explorer = w.explorer
        failing = explorer is not None and explorer.failing_streak >= FAILING_AFTER
        if failing:
            reasons.append(f"the extractor failed {explorer.failing_streak} times in a row")
        details = {
            "status": "ok" if not reasons else "unhealthy", "reasons": reasons,
            "worker_id": w.settings.worker_id,
            "index_documents": w.index.count() if w.index is not None else None,
            "lag": self.lag,
            "extractor": explorer.extractor.name if explorer else None,
            "model_version": explorer.extractor.model_version if explorer else None,
            "uptime_s": round(time.time() - self.started_at, 1),
        }
        return not reasons, details

    async def refresh_lag(self, interval_s: float = 5.0) -> None:
        """Keep :attr:`lag` current (``consumer/topic`` -> messages): listings behind the
        index, seeds behind the explorers' group."""
        while True:
            with contextlib.suppress(Exception):  # a broker hiccup leaves the last figures
                self.lag = await self._lag()
            await asyncio.sleep(interval_s)

    async def _lag(self) -> dict[str, int]:
        from aiokafka.admin import AIOKafkaAdminClient

        replica = self.worker.replica
        if replica is None or not replica.started:
            return {}
        settings = self.worker.settings
        lag = {f"replica/{topic.removeprefix(settings.topic_prefix)}": value
               for topic, value in (await replica.lag()).items()}
        admin = AIOKafkaAdminClient(**settings.kafka_client_kwargs())
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(settings.app_id)
        finally:
            await admin.close()
        ends = await replica.end_offsets(settings.topics.toxic_items)
        lag["explorer/toxic-items"] = sum(
            max(0, end - (committed[tp].offset if tp in committed else 0))
            for tp, end in ends.items())
        return lag


class _StatsCollector:
    """Reads the agents' counters at scrape time."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        w = self.metrics.worker
        if w.explorer is not None:
            s = w.explorer.stats
            for name, value, doc in (
                ("seeds_explored", s.seeds_explored, "Seeds explored (outputs acknowledged)."),
                ("seeds_skipped", s.seeds_skipped, "Seeds already explored by this model."),
                ("queries", s.queries, "Queries executed."),
                ("detections", s.detections, "Detections emitted."),
                ("extractor_errors", s.extractor_errors, "Failed extractor calls (retried)."),
                ("rollouts", s.rollouts, "Model rollouts applied."),
            ):
                yield CounterMetricFamily(f"qexplorer_{name}", doc, value=value)
            dead = CounterMetricFamily("qexplorer_dead_letters", "Messages dead-lettered.",
                                       labels=["source"])
            dead.add_metric(["toxic-items"], s.dead_letters)
            if w.replica is not None:
                dead.add_metric(["listings"], w.replica.stats.listings_dead)
            if w.rollouts is not None:
                dead.add_metric(["model-rollouts"], w.rollouts.refused)
            yield dead
            info = GaugeMetricFamily("qexplorer_extractor_info", "The extractor in service.",
                                     labels=["extractor", "model_version"])
            info.add_metric([w.explorer.extractor.name, w.explorer.extractor.model_version], 1)
            yield info
        if w.replica is not None:
            r = w.replica.stats
            yield CounterMetricFamily("qexplorer_listings_indexed",
                                      "Listing events applied to the index.",
                                      value=r.listings_applied)
            yield CounterMetricFamily("qexplorer_index_commits", "Index commits.",
                                      value=r.commits)
            yield GaugeMetricFamily("qexplorer_index_last_commit_timestamp_seconds",
                                    "When the index was last committed (searchable).",
                                    value=r.last_commit_at)
        if w.index is not None:
            yield GaugeMetricFamily("qexplorer_index_documents", "Listings in the index.",
                                    value=w.index.count())
            yield GaugeMetricFamily("qexplorer_index_bytes", "Size of the index directory.",
                                    value=_dir_bytes(w.settings.index_dir))
        lag = GaugeMetricFamily(
            "qexplorer_consumer_lag", "Messages not yet applied: by the replica (listings: not "
            "yet searchable) and by the explorers' consumer group (seeds not yet explored).",
            labels=["consumer", "topic"])
        for key, value in self.metrics.lag.items():
            lag.add_metric(key.split("/", 1), value)
        yield lag


def _dir_bytes(path: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):  # files come and go while Tantivy merges
        for file in path.rglob("*"):
            with contextlib.suppress(OSError):
                total += file.stat().st_size if file.is_file() else 0
    return total


async def serve(metrics: WorkerMetrics, settings: Settings) -> web.AppRunner | None:
    """Start ``/metrics`` and ``/health``; None (and an error logged) if the port is taken:
    a worker without its endpoint still indexes and explores."""

    async def scrape(_: web.Request) -> web.Response:
        return web.Response(body=metrics.scrape(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(_: web.Request) -> web.Response:
        ok, details = metrics.health()
        return web.Response(body=orjson.dumps(details), status=200 if ok else 503,
                            content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
    except OSError as exc:
        log.error("metrics endpoint %s:%s unavailable: %s", settings.metrics_host,
                  settings.metrics_port, exc)
        await runner.cleanup()
        return None
    log.info("metrics on http://%s:%s/metrics, health on /health", settings.metrics_host,
             settings.metrics_port)
    return runner


def logging_config(settings: Settings, level: str) -> dict:
    """dictConfig for the worker: ``text`` or ``json`` (``QEXPLORER_LOG_FORMAT``)."""
    formatter = (
        {"()": "pythonjsonlogger.json.JsonFormatter",
         "fmt": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
         "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
         "static_fields": {"worker_id": settings.worker_id, "app_id": settings.app_id}}
        if settings.log_format == "json"
        else {"format": "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"})
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default"}},
        "root": {"handlers": ["default"], "level": level.upper()},
    }
