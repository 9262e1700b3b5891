"""Dead letters on the real broker with a real worker: a bad listing is dead-lettered, the
operator lists it, shows it and replays it with ``qexplorer dead-letter``; a replayed listing
the contract accepts becomes searchable, one still bad is dead-lettered again, each replay is
recorded on ``dead-letter-replays``, a second replay is refused unless ``--again``, and so is
one that a newer record of the listing has superseded."""

from __future__ import annotations

import asyncio
import subprocess

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from qexplorer.harness.processes import command
from qexplorer.kafka.io import publish, read_to_end
from qexplorer.search.tantivy_index import TantivyIndex
from schemas.codec import dead_letter, encode
from schemas.models import DeadLetterReplay, ListingUpsert
from schemas.topics import DEAD_LETTER, LISTINGS
from tests.integration.conftest import read_records, wait_for
from tests.integration.test_pipeline import _send_raw

pytestmark = pytest.mark.integration

#: A word no other listing has, so a search for it finds the replayed listing only.
WORD = "zorblaxquint"


def _cli(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(command("dead-letter", *args),
                          env=cluster.cli_env(), capture_output=True, text=True, timeout=180)


def _list(cluster, *args: str) -> dict[str, dict]:
    done = _cli(cluster, "list", "--json", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return {row["id"]: row for row in orjson.loads(done.stdout)}


def _dead_letters(cluster) -> list[tuple[str, dict]]:
    """(id, record as JSON) of every dead letter so far."""
    return [(f"{m.partition}:{m.offset}", orjson.loads(m.value)) for m in asyncio.run(
        read_to_end(cluster.settings.kafka, cluster.settings.topics.dead_letter))]


def _from(cluster, partition: int, offset: int) -> str | None:
    """The id of the dead letter of the listings message at ``partition:offset``, if any."""
    return next((i for i, d in _dead_letters(cluster)
                 if (d["topic"], d["partition"], d["offset"])
                 == (cluster.settings.topics.listings, partition, offset)), None)


def _searchable(cluster, word: str) -> list[str] | None:
    try:
        index = TantivyIndex.open(cluster.index_dir(), writable=False)
        return [hit.listing_id for hit in index.search(word, 10)] or None
    except Exception:  # not created yet, or being committed
        return None


def test_a_dead_letter_is_listed_replayed_once_and_recorded(cluster):
    settings = cluster.settings
    topics = settings.topics
    cluster.start_worker()
    asyncio.run(publish(settings.kafka, topics, LISTINGS,
                        [ListingUpsert(id="l-ok", title="plain oak chair")]))
    # A platform bug: a listing cut short, not JSON.
    broken_value = b'{"schema_version": 1, "op": "upsert", "id": "l-broken", "title": "oak'
    asyncio.run(_send_raw(settings, topics.listings, [(b"l-broken", broken_value)]))
    broken = wait_for(lambda: next((i for i, d in _dead_letters(cluster)
                                    if d["stage"] == "decode-listing"), None),
                      120, 1.0, lambda: f"the bad listing was not dead-lettered:\n{cluster.log()}")
    [(_, broken_record)] = [(i, d) for i, d in _dead_letters(cluster) if i == broken]

    # The other case: a listing an earlier worker refused (a contract bug fixed since) that
    # the current contract accepts. Its dead letter is produced here; its source position
    # is made up (past the partition's end), as the message itself is long gone.
    fixed = ListingUpsert(id="l-fixed", title=f"{WORD} vintage lamp", description="brass")
    every = list(range(settings.topic.partitions))
    record = dead_letter(stage="decode-listing", error="SchemaError: price: (old contract)",
                         topic=topics.listings, value=encode(fixed), key=b"l-fixed",
                         partition=DefaultPartitioner()(b"l-fixed", every, every),
                         offset=1_000_000)
    asyncio.run(_send_raw(settings, topics.dead_letter,
                          [(DEAD_LETTER.key(record).encode(), encode(record))]))
    fixed_id = next(i for i, d in _dead_letters(cluster) if d["offset"] == 1_000_000)
    assert _searchable(cluster, WORD) is None

    rows = _list(cluster)
    assert set(rows) == {broken, fixed_id}
    assert rows[broken]["topic"] == topics.listings and not rows[broken]["replayed"]
    assert "not valid JSON" in rows[broken]["error"]
    assert list(_list(cluster, "--not-replayed", "--topic", "listings")) == [broken, fixed_id]
    shown = _cli(cluster, "show", broken)
    assert shown.returncode == 0, shown.stderr
    assert broken_value.decode() in shown.stdout and "l-broken" in shown.stdout
    dry = _cli(cluster, "replay", "--all", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "2 would be replayed" in dry.stdout
    assert read_records(cluster, topics.dead_letter_replays, DeadLetterReplay) == []

    done = _cli(cluster, "replay", fixed_id, broken, "--reason", "contract v2",
                "--by", "it-test")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"replayed {fixed_id} -> {topics.listings}" in done.stdout
    assert f"replayed {broken} -> {topics.listings}" in done.stdout

    # Each replay is recorded once the broker had the message: where it went, who, why.
    replays = {r.dead_letter_offset: r for r in read_records(
        cluster, topics.dead_letter_replays, DeadLetterReplay)}
    assert {f"0:{o}" for o in replays} == {broken, fixed_id}
    for id_, replay in ((broken, replays[int(broken.split(":")[1])]),
                        (fixed_id, replays[int(fixed_id.split(":")[1])])):
        assert f"{replay.dead_letter_partition}:{replay.dead_letter_offset}" == id_
        assert replay.topic == topics.listings
        assert (replay.reason, replay.replayed_by) == ("contract v2", "it-test")
    broken_replay = replays[int(broken.split(":")[1])]
    assert broken_replay.partition == broken_record["partition"]  # the partition it came from
    assert broken_replay.offset > broken_record["offset"]

    # The accepted listing is indexed by the worker like any new one...
    hits = wait_for(lambda: _searchable(cluster, WORD), 120, 1.0,
                    lambda: f"the replayed listing never became searchable:\n{cluster.log()}")
    assert hits == ["l-fixed"]
    # ...and the still-bad one is dead-lettered again, as a new dead letter of its replay.
    again = wait_for(lambda: _from(cluster, broken_replay.partition, broken_replay.offset),
                     120, 1.0,
                     lambda: f"the replayed bad listing was not dead-lettered:\n{cluster.log()}")
    assert again not in (broken, fixed_id)

    rows = _list(cluster)
    assert rows[broken]["replayed"] and rows[fixed_id]["replayed"]
    assert rows[broken]["failed_again"] == [again]
    assert rows[again]["replay_of"] == broken and not rows[again]["replayed"]
    assert rows[fixed_id]["replays"][0]["offset"] == replays[int(fixed_id.split(":")[1])].offset
    assert set(_list(cluster, "--replayed")) == {broken, fixed_id}
    assert set(_list(cluster, "--not-replayed")) == {again}

    # The platform has since published that listing again, valid: replaying the old bad
    # message would overwrite it, so it is refused.
    asyncio.run(publish(settings.kafka, topics, LISTINGS,
                        [ListingUpsert(id="l-broken", title="oak table")]))
    stale = _cli(cluster, "replay", again)
    assert stale.returncode == 1
    assert f"refused {again}: a newer record of its key" in stale.stdout

    # A second replay is refused without --again, and nothing is sent or recorded.
    second = _cli(cluster, "replay", fixed_id)
    assert second.returncode == 1
    assert f"refused {fixed_id}: already replayed" in second.stdout
    assert "--again" in second.stdout
    assert len(read_records(cluster, topics.dead_letter_replays, DeadLetterReplay)) == 2
    forced = _cli(cluster, "replay", fixed_id, "--again", "--by", "it-test")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert len(read_records(cluster, topics.dead_letter_replays, DeadLetterReplay)) == 3
    assert len(_list(cluster)[fixed_id]["replays"]) == 2
