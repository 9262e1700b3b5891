"""Topics that keep their data, on the real broker: what the registry creates, a worker that
refuses a listings topic that would lose listings, a worker started before its topics exist
or without a broker (one line, exit status 2), and a worker that joins after compaction and
still holds exactly the live listings."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from qexplorer.config import KafkaSettings
from qexplorer.harness.processes import command
from qexplorer.kafka import clients
from qexplorer.kafka.admin import check_topics, live_configs
from qexplorer.kafka.io import publish, read_to_end
from qexplorer.search.tantivy_index import TantivyIndex
from schemas.models import ListingDelete, ListingUpsert
from schemas.topics import FOREVER, LISTINGS
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


async def _alter(kafka: KafkaSettings, topic: str, config: dict[str, str]) -> None:
    """Set a topic's dynamic configuration (the whole set: unnamed keys fall back to the
    broker's defaults)."""
    admin = clients.admin(kafka)
    await admin.start()
    try:
        [response] = await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs=config)])
        errors = [(r["error_code"], r["error_message"])
                  for r in response.to_object()["resources"] if r["error_code"]]
        assert not errors, errors
    finally:
        await admin.close()


def test_topics_are_created_as_the_registry_declares_them(cluster):
    kafka, topics = cluster.settings.kafka, cluster.settings.topics
    live = asyncio.run(live_configs(kafka, topics.all()))
    assert set(live) == set(topics.all())
    assert live[topics.listings]["cleanup.policy"] == "compact"
    assert live[topics.rollouts]["cleanup.policy"] == "compact"
    assert live[topics.standing]["cleanup.policy"] == "compact"
    for name in (topics.toxic_items, topics.feedback, topics.dead_letter):
        assert live[name]["cleanup.policy"] == "delete"
        assert live[name]["retention.ms"] == str(FOREVER), name
    assert int(live[topics.detections]["retention.ms"]) > 0
    check = asyncio.run(check_topics(kafka, topics))
    assert check.ok and not check.warnings, check


def test_a_worker_refuses_a_listings_topic_that_would_lose_data(cluster):
    kafka, topics = cluster.settings.kafka, cluster.settings.topics
    asyncio.run(_alter(kafka, topics.listings,
                       {"cleanup.policy": "delete", "retention.ms": "604800000"}))
    wait_for(lambda: not asyncio.run(check_topics(kafka, topics)).ok, 30, 0.5,
             "the broker never reported the new configuration")
    worker = cluster.start_worker()
    try:
        code = worker.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker ran on a listings topic that loses data:\n{cluster.log()}")
    log = cluster.log()
    assert code != 0, log
    assert "refusing to run" in log and "cleanup.policy=delete" in log, log
    # the operator's view says the same, and the command fails
    done = subprocess.run(command("topics", "check"),
                          env=cluster.cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "cleanup.policy=delete" in done.stdout, done


def _refusal(env: dict[str, str]) -> subprocess.CompletedProcess:
    """A worker started with ``env``, run until it exits."""
    return subprocess.run(command("worker"), env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_worker_started_before_its_topics_exist_says_so_in_one_line(cluster):
    """An operator starts a worker before ``qexplorer topics create``: no faust start, no
    metadata errors, no traceback; one line naming the missing topics, exit status 2."""
    env = {**cluster.cli_env(), "QEXPLORER_TOPIC_PREFIX": f"{cluster.settings.topic.prefix}none."}
    done = _refusal(env)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert output.strip().splitlines() == [output.strip()], output
    assert output.startswith("refusing to run: missing topics ") and \
        "create them first (qexplorer topics create)" in output, output
    assert "listings" in output and "Traceback" not in output
    assert not any(t.startswith(env["QEXPLORER_TOPIC_PREFIX"])
                   for t in cluster.topics_left()), "the refused worker created topics"


def test_a_worker_without_a_broker_says_so_in_one_line(cluster):
    env = {**cluster.cli_env(), "KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    done = _refusal(env)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, output
    assert output.splitlines() == [
        "refusing to run: no Kafka broker answers at 127.0.0.1:1: check KAFKA_BOOTSTRAP and "
        "the security settings"], output


def test_a_worker_joining_after_compaction_holds_every_live_listing_and_none_deleted(cluster):
    kafka, topics = cluster.settings.kafka, cluster.settings.topics
    # small segments and an eager cleaner, so compaction happens within the test
    asyncio.run(_alter(kafka, topics.listings, {
        **topics.config(LISTINGS), "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01"}))
    originals = [ListingUpsert(id=f"c-{i:03d}", title=f"first edition item {i}")
                 for i in range(120)]
    edited = [ListingUpsert(id=f"c-{i:03d}", title=f"second edition item {i}")
              for i in range(0, 120, 3)]
    deleted = [ListingDelete(id=f"c-{i:03d}") for i in range(1, 120, 3)]
    published = 0
    for batch in (originals, edited, deleted):  # each batch in later segments than the last
        published += asyncio.run(publish(kafka, topics, LISTINGS, batch))
        time.sleep(0.3)

    def compacted() -> list | None:
        # an appended record rolls each partition's segment (segment.ms passed): only closed
        # segments are cleaned
        tail = [ListingUpsert(id=f"tail-{time.monotonic_ns()}-{p}", title="roll")
                for p in range(12)]
        asyncio.run(publish(kafka, topics, LISTINGS, tail))
        records = asyncio.run(read_to_end(kafka, topics.listings))
        firsts = [m for m in records if b"first edition" in m.value]
        superseded = [m for m in firsts if m.key.decode() in {e.id for e in edited + deleted}]
        return records if not superseded else None

    records = wait_for(compacted, 180, 2.0, "the broker never compacted the listings topic")
    tails = {m.key.decode() for m in records if m.key.startswith(b"tail-")}
    assert len(records) <= published + len(tails) - len(edited) - len(deleted)

    live = ({o.id for o in originals} - {d.id for d in deleted}) | tails
    cluster.start_worker()

    def replica_ids() -> set[str] | None:
        try:
            index = TantivyIndex.open(cluster.index_dir(), writable=False)
        except Exception:  # the worker is still creating it
            return None
        ids = index.ids()
        return ids if ids >= live else None

    ids = wait_for(replica_ids, 120, 0.5, lambda: f"the replica never held every live listing:\n"
                   f"{cluster.log()}")
    index = TantivyIndex.open(cluster.index_dir(), writable=False)
    assert ids == live  # none of the deleted ones
    assert index.get("c-000").title == "second edition item 0"  # the latest edition
    assert index.get("c-002").title == "first edition item 2"
