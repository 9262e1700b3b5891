"""The worker's operational surface: Prometheus metrics, a health endpoint, structured logs.

:class:`WorkerMetrics` owns a registry per worker and reads the worker through a small
interface, :class:`WorkerStats`: a :class:`Snapshot` of the agents' counters taken at scrape
time (so the logic never depends on Prometheus), and the consumer lag, refreshed in the
background (it needs broker round trips, which a scrape must not wait for). Latencies are
histograms fed through :meth:`WorkerMetrics.observe`.

:func:`serve` runs ``GET /metrics`` and ``GET /health`` on aiohttp inside the worker's event
loop, bound to the metrics host (localhost unless configured). ``/health`` answers 200 when
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
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agents.explorer import ExplorerStats
from agents.watcher import WatcherStats
from qexplorer.config import MetricsSettings, WorkerSettings
from streams.replica import ReplicaStats

log = logging.getLogger(__name__)

#: Extraction of one batch and confirmation-to-detection, in seconds.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: The extractor counts as failing after this many errors without a success in between.
FAILING_AFTER = 3


@dataclass(frozen=True)
class Snapshot:
    """A worker's state at one moment, as the metrics and the health check read it."""

    worker_id: str
    replica_running: bool = False
    replica: ReplicaStats | None = None
    explorer: ExplorerStats | None = None
    watcher: WatcherStats | None = None
    standing_active: int | None = None  # standing queries matched against new listings
    extractor: str | None = None
    model_version: str | None = None
    failing_streak: int = 0  # extractor failures since its last success
    index_documents: int | None = None
    index_bytes: int | None = None
    dead_letters: dict[str, int] = field(default_factory=dict)  # by source topic


class WorkerStats(Protocol):
    """What the metrics read from a worker."""

    def snapshot(self) -> Snapshot:
        """The worker's counters and state now (cheap: called on every scrape)."""
        ...

    async def lag(self) -> dict[str, int]:
        """``consumer/topic`` -> messages not yet applied (needs broker round trips)."""
        ...


class WorkerMetrics:
    """Metrics of one worker process."""

    def __init__(self, worker: WorkerStats) -> None:
        self.worker = worker
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "qexplorer_latency_seconds", "Stages of exploration: wait_index, extract and "
            "search (a batch), emit (a seed), seed_to_detection (a seed's message reaching "
            "the broker to its detections being acknowledged); of standing queries: "
            "watch_wait_index and watch_search (a batch of new listings), "
            "listing_to_detection (a new listing's message reaching the broker to its "
            "detection being acknowledged).",
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
        s = self.worker.snapshot()
        reasons = []
        if not s.replica_running:
            reasons.append("the index replica is not running")
        if s.failing_streak >= FAILING_AFTER:
            reasons.append(f"the extractor failed {s.failing_streak} times in a row")
        details = {
            "status": "ok" if not reasons else "unhealthy", "reasons": reasons,
            "worker_id": s.worker_id, "index_documents": s.index_documents, "lag": self.lag,
            "extractor": s.extractor, "model_version": s.model_version,
            "uptime_s": round(time.time() - self.started_at, 1),
        }
        return not reasons, details

    async def refresh_lag(self, interval_s: float = 5.0) -> None:
        """Keep :attr:`lag` current."""
        while True:
            with contextlib.suppress(Exception):  # a broker hiccup leaves the last figures
                self.lag = await self.worker.lag()
            await asyncio.sleep(interval_s)


class _StatsCollector:
    """Reads the worker's snapshot at scrape time."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        s = self.metrics.worker.snapshot()
        if s.explorer is not None:
            e = s.explorer
            for name, value, doc in (
                ("seeds_explored", e.seeds_explored, "Seeds explored (outputs acknowledged)."),
                ("seeds_skipped", e.seeds_skipped, "Seeds already explored by this model."),
                ("queries", e.queries, "Queries executed."),
                ("detections", e.detections, "Detections emitted."),
                ("extractor_errors", e.extractor_errors, "Failed extractor calls (retried)."),
                ("rollouts", e.rollouts, "Model rollouts applied."),
                ("seeds_reexplored", e.seeds_reexplored,
                 "Seeds explored again by a newly rolled-out model."),
                ("standing_queries_created", e.standing_queries,
                 "Queries of explored seeds that went on watching new listings."),
                ("standing_queries_common", e.standing_common,
                 "Of those, queries of words common in the index they were explored on: "
                 "they fire once their words are rarer."),
            ):
                yield CounterMetricFamily(f"qexplorer_{name}", doc, value=value)
            dead = CounterMetricFamily("qexplorer_dead_letters", "Messages dead-lettered.",
                                       labels=["source"])
            for source, count in s.dead_letters.items():
                dead.add_metric([source], count)
            yield dead
            info = GaugeMetricFamily("qexplorer_extractor_info", "The extractor in service.",
                                     labels=["extractor", "model_version"])
            info.add_metric([s.extractor or "", s.model_version or ""], 1)
            yield info
        if s.watcher is not None:
            w = s.watcher
            for name, value, doc in (
                ("standing_listings", w.listings,
                 "New listings matched against the standing queries."),
                ("standing_searches", w.searches, "Standing-query searches run."),
                ("standing_detections", w.detections,
                 "Detections made by standing queries."),
                ("standing_without_evidence", w.without_evidence,
                 "Standing-query matches dropped: the listing lacked the query's evidence."),
            ):
                yield CounterMetricFamily(f"qexplorer_{name}", doc, value=value)
        if s.standing_active is not None:
            yield GaugeMetricFamily("qexplorer_standing_active",
                                    "Standing queries new listings are matched against.",
                                    value=s.standing_active)
        if s.replica is not None:
            r = s.replica
            yield CounterMetricFamily("qexplorer_listings_indexed",
                                      "Listing events applied to the index.",
                                      value=r.listings_applied)
            yield CounterMetricFamily("qexplorer_index_commits", "Index commits.",
                                      value=r.commits)
            yield GaugeMetricFamily("qexplorer_index_last_commit_timestamp_seconds",
                                    "When the index was last committed (searchable).",
                                    value=r.last_commit_at)
        if s.index_documents is not None:
            yield GaugeMetricFamily("qexplorer_index_documents", "Listings in the index.",
                                    value=s.index_documents)
        if s.index_bytes is not None:
            yield GaugeMetricFamily("qexplorer_index_bytes", "Size of the index on disk.",
                                    value=s.index_bytes)
        lag = GaugeMetricFamily(
            "qexplorer_consumer_lag", "Messages not yet applied: by the replica (listings: not "
            "yet searchable), by the explorers' consumer group (seeds not yet explored) and by "
            "its watchers (new listings not yet matched against the standing queries).",
            labels=["consumer", "topic"])
        for key, value in self.metrics.lag.items():
            lag.add_metric(key.split("/", 1), value)
        yield lag


async def serve(metrics: WorkerMetrics, settings: MetricsSettings) -> web.AppRunner | None:
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
        await web.TCPSite(runner, settings.host, settings.port).start()
    except OSError as exc:
        log.error("metrics endpoint %s:%s unavailable: %s", settings.host, settings.port, exc)
        await runner.cleanup()
        return None
    log.info("metrics on http://%s:%s/metrics, health on /health", settings.host,
             settings.port)
    return runner


def logging_config(settings: WorkerSettings, level: str) -> dict:
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
