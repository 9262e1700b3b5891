"""Standing queries on the real broker: a seed is explored, its queries go on watching, and a
toxic listing published afterwards, written like the seed, is detected without any new seed;
an innocent new listing is not. The operator lists and retires them with ``qexplorer
standing``."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest
from aiokafka.partitioner import DefaultPartitioner

from qexplorer.harness.processes import command
from qexplorer.kafka.io import publish
from qexplorer.marketplace.items import to_listing_dict
from qexplorer.marketplace.synthetic import generate_marketplace
from schemas.models import Detection, ListingUpsert, StandingQuery, ToxicItem
from schemas.topics import LISTINGS, TOXIC_ITEMS
from tests.integration.conftest import read_records, wait_for

pytestmark = pytest.mark.integration


def _same_partition(key: str, stem: str, partitions: int) -> str:
    """An id starting with ``stem`` that the producer puts in ``key``'s partition (the worker
    matches a partition's listings in offset order: once the later one is matched, so is the
    earlier)."""
    choose = DefaultPartitioner()
    every = list(range(partitions))
    target = choose(key.encode(), every, every)
    return next(f"{stem}-{n}" for n in range(10_000)
                if choose(f"{stem}-{n}".encode(), every, every) == target)


def _cli(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(command("standing", *args),
                          env=cluster.cli_env(), capture_output=True, text=True, timeout=120)


def test_a_relisted_toxic_item_is_detected_by_a_standing_query_and_an_innocent_one_is_not(
        cluster):
    settings = cluster.settings
    topics = settings.topics
    items = generate_marketplace(n_benign=600, n_clusters=6, per_cluster=(8, 8), seed=5,
                                 chinese_share=0.0)
    harmful = [i for i in items if i.harmful]
    seed = harmful[0]
    benign = [i for i in items if not i.harmful]
    innocent_source, market = benign[0], [i for i in items if i is not benign[0]]
    asyncio.run(publish(settings.kafka, topics, LISTINGS,
                        [ListingUpsert(**to_listing_dict(i)) for i in market]))
    cluster.start_worker()
    asyncio.run(publish(settings.kafka, topics, TOXIC_ITEMS, [ToxicItem(
        id=seed.id, title=seed.title, description=seed.description,
        confirmed_by="integration-test")]))

    def standing():
        found = [q for q in read_records(cluster, topics.standing, StandingQuery)
                 if q.seed_id == seed.id]
        return found or None

    queries = wait_for(standing, 180, 1.0,
                       lambda: f"no standing query for the seed:\n{cluster.log()}")
    assert all(q.status == "active" and q.results > 0 for q in queries)

    # A seller relists the seed's item; an innocent listing goes up just before it, in the
    # same partition (so once the relisting is matched, the innocent one has been too).
    relisted_id = f"relist-{seed.id}"
    innocent_id = _same_partition(relisted_id, "innocent", settings.topic.partitions)
    innocent = ListingUpsert(id=innocent_id, title=innocent_source.title,
                             description=innocent_source.description)
    relisted = ListingUpsert(id=relisted_id, title=seed.title,
                             description=f"{seed.description} Restocked today.")
    published = time.monotonic()
    asyncio.run(publish(settings.kafka, topics, LISTINGS, [innocent]))
    asyncio.run(publish(settings.kafka, topics, LISTINGS, [relisted]))

    def standing_detections():
        found = [d for d in read_records(cluster, topics.detections, Detection)
                 if d.standing_query_id is not None]
        return found if any(d.listing_id == relisted_id for d in found) else None

    found = wait_for(standing_detections, 120, 0.5,
                     lambda: f"the relisting was not detected:\n{cluster.log()}")
    print(f"relisting detected {time.monotonic() - published:.1f} s after it was published")
    mine = [d for d in found if d.listing_id == relisted_id]
    ids = {q.query_id: q for q in queries}
    assert all(d.seed_id == seed.id and d.standing_query_id in ids for d in mine)
    assert all(d.queries == [ids[d.standing_query_id].query] for d in mine)
    # neither the innocent listing nor those published before the seed was explored (the
    # exploration searched them) were matched; no new seed was needed
    assert {d.listing_id for d in found} == {relisted_id}
    assert [t.id for t in read_records(cluster, topics.toxic_items, ToxicItem)] == [seed.id]

    # the operator sees the queries and retires one
    listed = _cli(cluster, "list")
    assert listed.returncode == 0, listed.stderr
    assert all(q.query_id in listed.stdout for q in queries)
    assert f"{len(queries)} active of {len(queries)} standing queries" in listed.stdout
    retired = _cli(cluster, "retire", queries[0].query_id, "--reason", "too broad")
    assert retired.returncode == 0, retired.stderr
    after = _cli(cluster, "list", "--all")
    assert f"{len(queries) - 1} active of {len(queries)}" in after.stdout
    assert "too broad" in after.stdout
    assert _cli(cluster, "retire", "no-such-query").returncode == 2


@pytest.mark.worker_settings(standing_batch=20, standing_batch_within_s=0.05)
def test_a_worker_killed_while_matching_loses_no_relisting(cluster):
    """SIGKILL the worker while new listings stream past its standing queries; after a
    restart every relisting of the seed is detected (matches are acknowledged only once
    their detections are on the broker) and no innocent listing is."""
    from qexplorer.harness.processes import kill_worker

    settings = cluster.settings
    topics = settings.topics
    items = generate_marketplace(n_benign=400, n_clusters=4, per_cluster=(6, 6), seed=9,
                                 chinese_share=0.0)
    seed = next(i for i in items if i.harmful)
    benign = [i for i in items if not i.harmful]
    asyncio.run(publish(settings.kafka, topics, LISTINGS,
                        [ListingUpsert(**to_listing_dict(i)) for i in items[:300]]))
    worker = cluster.start_worker()
    asyncio.run(publish(settings.kafka, topics, TOXIC_ITEMS, [ToxicItem(
        id=seed.id, title=seed.title, description=seed.description, confirmed_by="test")]))
    wait_for(lambda: [q for q in read_records(cluster, topics.standing, StandingQuery)
                      if q.seed_id == seed.id], 180, 1.0,
             lambda: f"no standing query for the seed:\n{cluster.log()}")

    relisted = [ListingUpsert(id=f"relist-{n}", title=seed.title,
                              description=f"{seed.description} Batch {n}.") for n in range(60)]
    innocent = [ListingUpsert(id=f"innocent-{n}", title=b.title, description=b.description)
                for n, b in enumerate(benign[-60:])]
    stream = [x for pair in zip(relisted, innocent, strict=True) for x in pair]

    def standing_found() -> set[str]:
        return {d.listing_id for d in read_records(cluster, topics.detections, Detection)
                if d.standing_query_id is not None}

    asyncio.run(publish(settings.kafka, topics, LISTINGS, stream[:60]))
    wait_for(lambda: standing_found(), 120, 0.2, lambda: f"nothing matched:\n{cluster.log()}")
    kill_worker(worker)
    asyncio.run(publish(settings.kafka, topics, LISTINGS, stream[60:]))
    cluster.start_worker()
    wanted = {r.id for r in relisted}

    def missed() -> str:
        queries = [(q.query, q.min_score, q.watch_offsets)
                   for q in read_records(cluster, topics.standing, StandingQuery)]
        return (f"relistings missed after the restart: {sorted(wanted - standing_found())}\n"
                f"standing queries (query, floor, from): {queries}\n{cluster.log()}")

    found = wait_for(lambda: (f := standing_found()) >= wanted and f, 180, 1.0, missed)
    assert not {i for i in found if i.startswith("innocent-")}
    # explored once: a restarted worker that gets the seed again (its position not committed
    # before the kill) skips it, and the standing queries keep the position they watch from
    starts = {tuple(sorted(q.watch_offsets.items()))
              for q in read_records(cluster, topics.standing, StandingQuery)}
    assert len(starts) == 1, starts
