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


def test_the_demos_review_says_how_to_restart_and_takes_its_worker_along_when_killed(
        broker, tmp_path):
    """``qexplorer demo --review`` prints its undo window and what a restart needs (prefix,
    app id, reviewers, window); killed with SIGKILL, its worker stops too and the topics
    stay for that restart."""
    import os
    import re
    import signal
    import uuid

    from qexplorer.harness.processes import spawn
    from qexplorer.harness.run import list_topics

    prefix = f"it-demo-{uuid.uuid4().hex[:8]}."
    log = tmp_path / "demo.log"
    demo = spawn(["demo", "--review", "--benign", "300"],
                 {"QEXPLORER_TOPIC_PREFIX": prefix, "QEXPLORER_REVIEW_PORT": str(free_port()),
                  "QEXPLORER_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "400"}, log)
    try:
        text = wait_for(lambda: "to restart on these topics" in (t := log.read_text(
            errors="replace")) and t, 180, 0.5,
            lambda: f"the demo never served its review queue:\n{log.read_text()[-3000:]}")
        worker = int(re.search(r"worker pid (\d+)", text).group(1))
        assert re.search(r"a confirm becomes a seed 5 s after it is made", text), text
        restart = re.search(r"to restart on these topics.*", text).group(0)
        for variable in ("QEXPLORER_TOPIC_PREFIX", "QEXPLORER_WORKER_APP_ID",
                         "QEXPLORER_REVIEW_USERS", "QEXPLORER_REVIEW_UNDO_S=5"):
            assert variable in restart, restart
        os.kill(worker, 0)  # running
        demo.send_signal(signal.SIGKILL)
        demo.wait(10)

        def stopped() -> bool:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                return True
            with open(f"/proc/{worker}/stat") as stat:  # a zombie until its parent reaps it
                return stat.read().split(") ")[1].startswith("Z")

        wait_for(stopped, 60, 0.5, "the demo's worker outlived the demo")
        assert [t for t in asyncio.run(list_topics(broker)) if t.startswith(prefix)]
    finally:
        if demo.poll() is None:
            demo.kill()
        from qexplorer.kafka.admin import delete_topics

        settings = broker.replace(topic={"prefix": prefix})
        wait_for(lambda: not asyncio.run(delete_topics(
            settings.kafka, settings.topics, names=[t for t in asyncio.run(
                list_topics(broker)) if t.startswith((prefix, "qx-demo-"))])), 60, 1.0,
            "the demo's topics were not deleted")
