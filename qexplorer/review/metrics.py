"""The review service's Prometheus metrics: queue depth, leases, decisions, review latency.

Gauges are read from the queue at scrape time; ``decisions_total`` and the latency histogram
count what reviewers decide through this process (a restart starts them again, as Prometheus
counters do; the decided listings by kind are a gauge over the whole topic).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily, Metric

from qexplorer.review.queue import Item, ReviewQueue
from schemas.models import ModerationDecision

#: Detection to decision, in seconds: from a minute to a week.
LATENCY_BUCKETS = (60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400)


class ReviewMetrics:
    """A registry of its own (several services can live in one test process)."""

    def __init__(self, queue: ReviewQueue, clock: Callable[[], float] = time.time) -> None:
        """Metrics over ``queue``; ``clock`` gives the time leases are judged at."""
        self.registry = CollectorRegistry()
        self._queue = queue
        self._clock = clock
        self.decisions = PromCounter(
            "qexplorer_review_decisions", "Decisions made through this service, by kind.",
            ["decision"], registry=self.registry)
        self.latency = Histogram(
            "qexplorer_review_latency_seconds",
            "From a listing's first detection to its decision.",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(self)

    def observe(self, decision: ModerationDecision, item: Item) -> None:
        """Count a decision just made on ``item``."""
        self.decisions.labels(decision.decision).inc()
        if decision.decision != "undo":
            waited = (decision.decided_at - item.first_detected_at).total_seconds()
            self.latency.observe(max(0.0, waited))

    def collect(self) -> Iterator[Metric]:
        """The gauges, read from the queue now."""
        queue = self._queue
        yield GaugeMetricFamily("qexplorer_review_queue_depth",
                                "Listings waiting for a decision.", value=queue.depth())
        yield GaugeMetricFamily("qexplorer_review_leases",
                                "Items opened by a reviewer right now.",
                                value=queue.leases(self._clock()))
        decided = GaugeMetricFamily("qexplorer_review_decided_listings",
                                    "Listings by their effective decision.",
                                    labels=["decision"])
        for kind, count in sorted(Counter(d.decision for d in queue.decisions.values())
                                  .items()):
            decided.add_metric([kind], count)
        yield decided
        yield GaugeMetricFamily("qexplorer_review_seeds_known",
                                "Toxic items (seeds) read from the topic.",
                                value=len(queue.seeds))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
