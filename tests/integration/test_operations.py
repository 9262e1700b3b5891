"""What an operator sees of a running worker: Prometheus metrics scraped over HTTP, the health
endpoint and JSON logs, while real listings, seeds and a bad message go through Kafka."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qexplorer.kafka.io import publish
from qexplorer.marketplace.items import to_listing_dict, to_toxic_dict
from qexplorer.marketplace.synthetic import generate_marketplace, split_seeds
from schemas.models import ListingUpsert, ToxicItem
from schemas.topics import LISTINGS, TOXIC_ITEMS
from tests.integration.conftest import free_port, wait_for
from tests.integration.test_pipeline import _send_raw

pytestmark = pytest.mark.integration


PORT = free_port()


def _scrape() -> dict[tuple[str, tuple], float] | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{PORT}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.worker_settings(metrics_port=PORT, log_format="json")
def test_metrics_health_and_json_logs_of_a_running_worker(cluster):
    items = generate_marketplace(n_benign=500, n_clusters=4, seed=3)
    seeds = split_seeds(items, 0.5, seed=1)[:10]
    topics = cluster.settings.topics
    cluster.start_worker()
    wait_for(_scrape, 60, 0.5, lambda: f"no metrics endpoint:\n{cluster.log()}")
    asyncio.run(publish(cluster.settings.kafka, topics, LISTINGS,
                        [ListingUpsert(**to_listing_dict(i)) for i in items]))
    asyncio.run(_send_raw(cluster.settings, topics.listings, [(b"bad", b"{not json")]))
    asyncio.run(publish(cluster.settings.kafka, topics, TOXIC_ITEMS,
                        [ToxicItem(**to_toxic_dict(s, "ops-test")) for s in seeds]))

    def explored():
        metrics = _scrape() or {}
        done = metrics.get(("qexplorer_seeds_explored_total", ()), 0) == len(seeds)
        lag = [metrics.get(("qexplorer_consumer_lag", (("consumer", consumer), ("topic", topic))))
               for consumer, topic in (("replica", "listings"), ("explorer", "toxic-items"))]
        return metrics if done and lag == [0, 0] else None

    metrics = wait_for(explored, 120, 1.0,
                       lambda: f"metrics never showed the work:\n{cluster.log()}")
    assert metrics[("qexplorer_listings_indexed_total", ())] == len(items)
    assert metrics[("qexplorer_index_documents", ())] == len(items)
    assert metrics[("qexplorer_index_bytes", ())] > 0
    assert metrics[("qexplorer_dead_letters_total", (("source", "listings"),))] == 1
    assert metrics[("qexplorer_detections_total", ())] > 0
    assert metrics[("qexplorer_queries_total", ())] >= len(seeds)
    for stage in ("extract", "seed_to_detection"):
        assert metrics[("qexplorer_latency_seconds_count", (("stage", stage),))] > 0
    info = [labels for name, labels in metrics if name == "qexplorer_extractor_info"]
    assert dict(info[0])["extractor"] == "keywords"

    health = httpx.get(f"http://127.0.0.1:{PORT}/health", timeout=2)
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["status"] == "ok" and body["index_documents"] == len(items)
    assert body["model_version"] == dict(info[0])["model_version"]

    records = [json.loads(line) for line in cluster.log().splitlines()
               if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r.get("worker_id") == "w1" for r in records)
