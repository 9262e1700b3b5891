"""Faults a deployment meets, on the real broker with real worker processes: a damaged index at
start, a broker restart mid-stream, workers killed again and again while they explore, and a
second worker joining (then the first one dying) in the middle of the stream. After each:
every listing indexed, every seed explored, every detection present, nothing duplicated that
its key cannot absorb."""

from __future__ import annotations

import asyncio
import os
import random
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qexplorer.harness.processes import kill_worker, stop_worker
from qexplorer.kafka.io import publish
from qexplorer.marketplace.items import to_listing_dict, to_toxic_dict
from qexplorer.marketplace.synthetic import generate_marketplace, split_seeds
from schemas.models import Detection, ListingUpsert, ToxicItem, detection_key
from schemas.topics import LISTINGS, TOXIC_ITEMS
from tests.integration.conftest import explored, free_port, read_records, wait_for

pytestmark = pytest.mark.integration


def _market(n_benign: int = 3000, seed: int = 4):
    items = generate_marketplace(n_benign=n_benign, n_clusters=8, seed=seed)
    return items, split_seeds(items, 0.4, seed=seed)


def _publish(cluster, items=(), seeds=()):
    kafka, topics = cluster.settings.kafka, cluster.settings.topics
    if items:
        asyncio.run(publish(kafka, topics, LISTINGS,
                            [ListingUpsert(**to_listing_dict(i)) for i in items]))
    if seeds:
        asyncio.run(publish(kafka, topics, TOXIC_ITEMS,
                            [ToxicItem(**to_toxic_dict(s, "fault-test")) for s in seeds]))


def _count(cluster, worker_id: str = "w1") -> int:
    return cluster.indexed(worker_id)


def _check_complete(cluster, items, seeds) -> None:
    """Every listing in every worker's index was checked by the caller; here: every seed
    explored once per query slot, every feedback hit has its detection, keys unique."""
    by_seed = wait_for(lambda: explored(cluster, {s.id for s in seeds}), 240, 1.0,
                       lambda: f"seeds not explored:\n{cluster.log()}")
    detections = read_records(cluster, cluster.settings.topics.detections, Detection)
    keys = {d.key for d in detections}
    seed_ids = {s.id for s in seeds}
    for records in by_seed.values():
        slots = {r.query_index: r for r in records}  # replays repeat a slot, never change it
        assert len({(r.query_index, r.query) for r in records}) == len(slots)
        for record in slots.values():
            for hit in record.results:
                if hit.listing_id not in seed_ids:
                    assert detection_key(record.seed_id, hit.listing_id,
                                         record.model_version) in keys
    # the same detection may be sent twice after a crash, always under the same key
    assert len(keys) == len({(d.seed_id, d.listing_id, d.model_version) for d in detections})


def test_a_damaged_index_at_start_is_detected_and_rebuilt_from_the_topic(cluster):
    items, seeds = _market()
    _publish(cluster, items)
    worker = cluster.start_worker()
    wait_for(lambda: _count(cluster) == len(items), 120, 0.5, lambda: cluster.log())
    stop_worker(worker)
    index_dir = cluster.index_dir("w1")
    for f in index_dir.iterdir():  # garbage over every segment file
        if f.is_file() and f.suffix in (".idx", ".store", ".term"):
            f.write_bytes(os.urandom(max(64, f.stat().st_size)))
    cluster.start_worker()
    wait_for(lambda: "rebuilding from the topic" in cluster.full_log(), 60, 0.5, cluster.log)
    wait_for(lambda: _count(cluster) == len(items), 120, 0.5,
             lambda: f"the index was not rebuilt:\n{cluster.log()}")
    _publish(cluster, seeds=seeds)
    _check_complete(cluster, items, seeds)
    assert any(p.name.startswith("index.broken-") for p in index_dir.parent.iterdir())


def test_a_broker_restart_mid_stream_loses_nothing(backend_cluster, broker):
    from qexplorer.harness import broker as local

    if not broker.kafka.uses_local_broker:
        pytest.skip("restarts the project's local broker only")
    broker = local.LocalBroker.of(broker)
    cluster = backend_cluster
    items, seeds = _market()
    half = len(items) // 2
    _publish(cluster, items[:half], seeds[: len(seeds) // 2])
    cluster.start_worker()
    wait_for(lambda: _count(cluster) >= half, 120, 0.5, lambda: cluster.log())
    local.stop(broker)
    time.sleep(3)  # the worker retries against a dead broker for a while
    local.start(broker)
    _publish(cluster, items[half:], seeds[len(seeds) // 2:])
    wait_for(lambda: _count(cluster) == len(items), 180, 0.5,
             lambda: f"listings lost across the broker restart:\n{cluster.log()}")
    _check_complete(cluster, items, seeds)


@pytest.mark.worker_settings(explore_batch=2)
def test_workers_killed_again_and_again_while_exploring_lose_nothing(backend_cluster):
    cluster = backend_cluster
    items, seeds = _market(n_benign=2000, seed=6)
    _publish(cluster, items)
    rng = random.Random(5)
    worker = cluster.start_worker()
    wait_for(lambda: _count(cluster) == len(items), 120, 0.5, lambda: cluster.log())
    _publish(cluster, seeds=seeds)
    # SIGKILL as soon as new feedback shows the worker is mid-stream, after a random pause:
    # kills land between extraction, search, emit and acknowledgement
    for _ in range(4):
        before = len(explored(cluster, set()) or {})
        if before == len(seeds):
            break
        wait_for(lambda b=before: len(explored(cluster, set()) or {}) > b, 120, 0.05,
                 lambda: cluster.log())
        time.sleep(rng.uniform(0.0, 0.2))
        kill_worker(worker)
        worker = cluster.start_worker()
    _check_complete(cluster, items, seeds)


def _metric(port: int, name: str) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    return next((s.value for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == name), None)


def test_two_workers_split_seeds_hold_the_full_index_and_survive_a_rebalance(backend_cluster):
    cluster = backend_cluster
    items, seeds = _market(n_benign=3000, seed=8)
    first, second, third = seeds[:20], seeds[20:40], seeds[40:]
    ports = {"w1": free_port(), "w2": free_port()}
    _publish(cluster, items, first)
    w1 = cluster.start_worker("w1", QEXPLORER_METRICS_PORT=str(ports["w1"]))
    wait_for(lambda: explored(cluster, {s.id for s in first}), 120, 1.0, lambda: cluster.log("w1"))

    cluster.start_worker("w2", QEXPLORER_METRICS_PORT=str(ports["w2"]))  # rebalance
    wait_for(lambda: "newly assigned partitions {TopicPartition" in cluster.log("w2"), 120, 0.5,
             lambda: f"w2 never got partitions:\n{cluster.log('w2')}")
    _publish(cluster, seeds=second)
    wait_for(lambda: _count(cluster, "w2") == len(items), 120, 0.5, lambda: cluster.log("w2"))
    wait_for(lambda: explored(cluster, {s.id for s in first + second}), 180, 1.0,
             lambda: cluster.log("w2"))
    # seeds are split: w2 explores some (its counter rises once the broker has its outputs)
    wait_for(lambda: (_metric(ports["w2"], "qexplorer_seeds_explored_total") or 0) > 0, 60,
             0.5, lambda: f"w2 explored no seed:\n{cluster.log('w2')}")

    stop_worker(w1)  # scale in: the group moves w1's partitions to w2
    _publish(cluster, seeds=third)
    # full copies on Tantivy; one index on OpenSearch
    assert _count(cluster, "w1") == _count(cluster, "w2") == len(items)
    _check_complete(cluster, items, seeds)
