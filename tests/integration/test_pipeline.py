"""End to end on the real broker: a real labelled dataset goes in as listings and confirmed
toxic items; the detections and search feedback that come back are checked for content. On
each search backend (Tantivy, OpenSearch)."""

from __future__ import annotations

import asyncio
import base64
import re
from collections import defaultdict

import orjson
import pytest

from agents.extractor.base import SeedText
from agents.extractor.keywords import KeywordsExtractor
from qexplorer.kafka.io import publish, read_to_end
from qexplorer.marketplace.datasets import dedupe_texts, load_dataset, marketplace_sample
from qexplorer.marketplace.items import to_listing_dict
from qexplorer.search import memory_index
from qexplorer.search.protocol import Change, search
from schemas.models import (
    Detection,
    ListingUpsert,
    SearchFeedback,
    ToxicItem,
    detection_key,
    explored_key,
)
from schemas.topics import LISTINGS, TOXIC_ITEMS
from tests.integration.conftest import read_records, wait_for

pytestmark = pytest.mark.integration

N_SEEDS = 20
WORD = re.compile(r"[^\W_]+")


def _sms_marketplace():
    try:
        items = load_dataset("sms_spam")
    except FileNotFoundError:
        pytest.skip("../shared/datasets is not beside the project")
    return marketplace_sample(dedupe_texts(items), harmful_rate=0.12, seed=0)


def test_real_dataset_through_kafka_gives_the_expected_detections_and_feedback(
        backend_cluster):
    cluster = backend_cluster
    items = _sms_marketplace()
    by_id = {i.id: i for i in items}
    spam = sorted((i for i in items if i.harmful), key=lambda i: i.id)
    seeds = spam[:: max(1, len(spam) // N_SEEDS)][:N_SEEDS]
    topics = cluster.settings.topics

    asyncio.run(publish(cluster.settings.kafka, cluster.settings.topics, LISTINGS,
                        [ListingUpsert(**to_listing_dict(i)) for i in items]))
    cluster.start_worker()
    asyncio.run(publish(cluster.settings.kafka, cluster.settings.topics, TOXIC_ITEMS, [
        ToxicItem(id=s.id, title=s.title, description=s.description, cluster=s.cluster,
                  confirmed_by="integration-test") for s in seeds]))

    seed_ids = {s.id for s in seeds}

    def all_explored():
        feedback = read_records(cluster, topics.feedback, SearchFeedback)
        return feedback if {f.seed_id for f in feedback} == seed_ids else None

    feedback = wait_for(all_explored, 180, 1.0, lambda: f"seeds not explored:\n{cluster.log()}")
    detections = read_records(cluster, topics.detections, Detection)

    # The queries are the deterministic extractor's, for the seed's own text.
    extractor = KeywordsExtractor()
    expected = asyncio.run(extractor.extract(
        [SeedText(s.id, s.title, s.description) for s in seeds], 4))
    queries = defaultdict(list)
    for record in sorted(feedback, key=lambda f: (f.seed_id, f.query_index)):
        queries[record.seed_id].append(record.query)
        assert record.model_version == extractor.model_version
    assert dict(queries) == {e.seed_id: e.queries for e in expected if e.queries}

    # Each result is a real listing that contains a word of its query; never the seed.
    reference = memory_index()
    reference.apply(Change(ListingUpsert(**to_listing_dict(item))) for item in items)
    reference.commit(None)
    for record in feedback:
        assert record.seed_id not in {h.listing_id for h in record.results}
        assert [h.rank for h in record.results] == list(range(1, len(record.results) + 1))
        words = {w.casefold() for w in WORD.findall(record.query)}
        for hit in record.results:
            text = by_id[hit.listing_id].text.casefold()
            assert any(w in text for w in words), (record.query, text)
        # ...and the same query on an index built directly from the data finds the same
        # listings (BM25 statistics differ a little: the replica also holds its metadata).
        direct = {h.listing_id for h in search(reference, record.query, 10,
                                                 exclude=(record.seed_id,))}
        found = {h.listing_id for h in record.results}
        assert len(direct & found) >= 0.8 * max(len(direct), len(found)), record.query

    # One detection per (seed, listing) hit by any query, keyed deterministically.
    by_key = {d.key: d for d in detections}
    for record in feedback:
        for hit in record.results:
            if hit.listing_id in seed_ids:
                continue  # confirmed toxic items are not detected again
            key = detection_key(record.seed_id, hit.listing_id, record.model_version)
            assert key in by_key, (record.seed_id, hit.listing_id)
            assert record.query in by_key[key].queries
            assert by_key[key].best_rank <= hit.rank
    assert all(d.listing_id not in seed_ids for d in detections)

    # It finds spam: the reference YAKE precision on this set is about 0.67.
    precision = sum(by_id[d.listing_id].harmful for d in by_key.values()) / len(by_key)
    assert precision > 0.4, precision

    # Feedback is keyed by (seed, model version): the trainer can group by it.
    raw = asyncio.run(read_to_end(cluster.settings.kafka, topics.feedback))
    assert {m.key for m in raw} == {explored_key(s, extractor.model_version).encode()
                                    for s in seed_ids}


def test_bad_messages_reach_the_dead_letter_topic_and_the_worker_goes_on(backend_cluster):
    cluster = backend_cluster
    topics = cluster.settings.topics
    good = ListingUpsert(id="ok-1", title="vintage oak chair", description="solid wood")
    asyncio.run(_send_raw(cluster.settings, topics.listings, [
        (b"bad-1", b"{not json"),
        (b"bad-2", orjson.dumps({"schema_version": 9, "id": "bad-2", "title": "x"})),
        (b"ok-1", orjson.dumps(good.model_dump(mode="json"))),
    ]))
    asyncio.run(_send_raw(cluster.settings, topics.toxic_items, [
        (b"t-bad", b"\xff\xfe"),
        (b"t-ok", orjson.dumps(ToxicItem(id="t-ok", title="oak chair",
                                         confirmed_by="test").model_dump(mode="json"))),
    ]))
    cluster.start_worker()
    dead = wait_for(lambda: (lambda d: d if len(d) >= 3 else None)(
        asyncio.run(read_to_end(cluster.settings.kafka, topics.dead_letter))), 120, 1.0,
        lambda: f"dead letters missing:\n{cluster.log()}")
    records = [orjson.loads(m.value) for m in dead]
    stages = sorted(r["stage"] for r in records)
    assert stages == ["decode-listing", "decode-listing", "decode-toxic-item"]
    raws = {base64.b64decode(r["raw_value_b64"]) for r in records}
    assert {b"{not json", b"\xff\xfe"} <= raws
    assert any("unsupported schema_version 9" in r["error"] for r in records)
    feedback = wait_for(lambda: read_records(cluster, topics.feedback, SearchFeedback), 120, 1.0,
                        "the good seed was not explored")
    assert feedback[0].seed_id == "t-ok"
    assert [h.listing_id for h in feedback[0].results] == ["ok-1"]


async def _send_raw(settings, topic, pairs):
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**settings.kafka.client_kwargs(), acks="all")
    await producer.start()
    try:
        for key, value in pairs:
            await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()
