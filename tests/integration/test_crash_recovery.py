"""SIGKILL the worker while it indexes and again while it explores; after a restart every
listing is indexed, every seed explored and no detection is missing. On each search backend."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from qexplorer.harness.processes import kill_worker, stop_worker
from qexplorer.kafka.io import publish, read_to_end, topic_partitions
from qexplorer.marketplace.items import to_listing_dict
from qexplorer.marketplace.synthetic import generate_marketplace, split_seeds
from qexplorer.search.tantivy_index import TantivyIndex
from schemas.codec import decode
from schemas.models import Detection, ListingUpsert, SearchFeedback, ToxicItem, detection_key
from schemas.topics import LISTINGS, TOXIC_ITEMS
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


async def _message_count(settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(**settings.kafka.client_kwargs(), group_id=None)
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, topic)
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


@pytest.mark.worker_settings(index_commit_docs=2000, index_commit_interval_s=0.2,
                             explore_batch=2)
def test_sigkill_during_indexing_and_exploring_loses_nothing(backend_cluster):
    cluster = backend_cluster
    items = generate_marketplace(n_benign=60_000, n_clusters=12, seed=5)
    seeds = split_seeds(items, 0.5, seed=3)
    topics = cluster.settings.topics
    settings = cluster.settings
    asyncio.run(publish(settings.kafka, settings.topics, LISTINGS,
                        [ListingUpsert(**to_listing_dict(i)) for i in items]))
    asyncio.run(publish(settings.kafka, settings.topics, TOXIC_ITEMS, [
        ToxicItem(id=s.id, title=s.title, description=s.description, cluster=s.cluster,
                  confirmed_by="test") for s in seeds]))

    # 1. killed while indexing: some commits made, not all
    worker = cluster.start_worker()
    committed = wait_for(lambda: cluster.indexed(), 120, 0.05, "nothing was committed")
    kill_worker(worker)
    assert committed < len(items), "indexing finished before the kill: make the set larger"

    # 2. killed while exploring: some feedback out, not all
    worker = cluster.start_worker()
    wait_for(lambda: asyncio.run(_message_count(settings, topics.feedback)), 180, 0.05,
             lambda: f"no seed explored after restart:\n{cluster.log()}")
    kill_worker(worker)
    explored_before = {decode(SearchFeedback, m.value).seed_id
                       for m in asyncio.run(read_to_end(settings.kafka, topics.feedback))}

    # 3. a clean run to the end
    worker = cluster.start_worker()
    seed_ids = {s.id for s in seeds}

    def all_explored():
        records = [decode(SearchFeedback, m.value)
                   for m in asyncio.run(read_to_end(settings.kafka, topics.feedback))]
        return records if {r.seed_id for r in records} >= seed_ids else None

    feedback = wait_for(all_explored, 240, 1.0, lambda: f"seeds missing:\n{cluster.log()}")
    detections = [decode(Detection, m.value)
                  for m in asyncio.run(read_to_end(settings.kafka, topics.detections))]
    stop_worker(worker)

    assert explored_before < seed_ids, "exploration ended before the second kill"
    index = (cluster.shared_index() if cluster.backend == "opensearch"
             else TantivyIndex.open(cluster.index_dir("w1"), writable=False))
    try:
        assert index.ids() == {i.id for i in items}
        assert index.count() == len(items)
    finally:
        index.close()

    by_key: dict[str, set[tuple]] = {}
    for d in detections:
        by_key.setdefault(d.key, set()).add((d.seed_id, d.listing_id, d.model_version))
    assert all(len(v) == 1 for v in by_key.values()), "a key must name one detection"
    for record in feedback:
        for hit in record.results:
            if hit.listing_id in seed_ids:
                continue
            assert detection_key(record.seed_id, hit.listing_id, record.model_version) in by_key
