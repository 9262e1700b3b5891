"""The watcher's handler without a broker: a real in-memory index, standing queries made by the
real explorer, and a sink for what it emits."""

from __future__ import annotations

import pytest

from agents.explorer import Explorer, RawMessage
from agents.standing import StandingBook
from agents.watcher import Watcher, arrivals_for, arrivals_of
from qexplorer.config import Settings
from qexplorer.search import memory_index
from qexplorer.search.protocol import Change
from schemas.codec import encode
from schemas.models import Detection, ListingUpsert, StandingQuery, utcnow
from tests.agents.test_explorer import Sink, StubExtractor, StubReplica, _message, _seed

OLD = ["c0ca snow ❄️ tg @plug", "snow ❄️ fresh tg @plug", "snow boots size 42",
       "garden chair", "snow globe", "oak table", "red bicycle", "blue kettle"]


@pytest.fixture
def settings() -> Settings:
    return Settings.load(topic={"prefix": "t."},
                         exploration={"queries_per_seed": 2, "results_per_query": 2},
                         standing={"per_seed": 2})


def _listing(offset: int, listing_id: str, title: str) -> tuple[Change, RawMessage]:
    listing = ListingUpsert(id=listing_id, title=title)
    raw = encode(listing)
    message = RawMessage("t.listings", 0, offset, listing_id.encode(), raw,
                         utcnow().timestamp())
    return Change(listing, raw, (0, offset)), message


async def _explored(settings: Settings) -> tuple[StubReplica, StandingBook, Sink]:
    """An index of OLD listings and the seed l0 explored: its standing queries in the book."""
    index = memory_index()
    index.apply(_listing(i, f"l{i}", title)[0] for i, title in enumerate(OLD))
    index.commit({"t.listings": {0: len(OLD)}})
    replica = StubReplica(index)
    sink = Sink()
    explorer = Explorer(settings.exploration, settings.topics, replica,
                        StubExtractor({"l0": ["snow tg plug", "nothing matches zzz"]}), sink,
                        standing=settings.standing)
    await explorer.handle([_message(_seed())])
    book = StandingBook(settings.standing)
    book.extend(sink.records("t.standing-queries", StandingQuery))
    return replica, book, sink


async def test_an_explored_seed_leaves_its_productive_queries_standing(settings):
    _, _, sink = await _explored(settings)
    standing, = sink.records("t.standing-queries", StandingQuery)
    assert standing.query == "snow tg plug" and standing.seed_id == "l0"
    assert standing.results == 2 and standing.min_score > 0  # returned its limit of 2
    assert standing.model_version == "stub-1" and standing.status == "active"
    assert standing.watch_from <= utcnow() and standing.watch_offsets == {0: len(OLD)}


async def test_a_new_listing_written_like_the_seed_is_detected_and_an_innocent_one_is_not(
        settings):
    replica, book, sink = await _explored(settings)
    watcher = Watcher(settings.standing, settings.topics, replica, book, sink,
                      wait_index_s=1.0)
    new = [_listing(100, "n1", "fresh snow ❄️ tg @plug today"),
           _listing(101, "n2", "snow shovel for sale"),  # shares a word: scores too low
           _listing(102, "n3", "vintage oak table")]
    replica.index.apply(c for c, _ in new)
    replica.index.commit(None)
    sent_before = len(sink.sent)
    assert await watcher.handle([m for _, m in new]) == 1
    detection, = [d for d in sink.records("t.detections", Detection)
                  if d.standing_query_id is not None]
    assert detection.listing_id == "n1" and detection.seed_id == "l0"
    assert detection.queries == ["snow tg plug"] and detection.model_version == "stub-1"
    assert len(sink.sent) == sent_before + 1
    assert watcher.stats.listings == 3 and watcher.stats.searches == 1
    # a listing its exploration searched already is not matched again
    searched = [RawMessage("t.listings", 0, 1, b"l1", b"{}", utcnow().timestamp())]
    assert await watcher.handle(searched) == 0


async def test_a_listing_handled_before_its_query_arrived_is_caught_up_with(settings):
    """The race between a seed's exploration and a batch of new listings: the batch is
    handled before the seed's standing query reaches this worker; the query's first run on
    the partition searches back to where its exploration stopped."""
    replica, book, sink = await _explored(settings)
    queries = list(book.queries.values())
    early = StandingBook(settings.standing)
    watcher = Watcher(settings.standing, settings.topics, replica, early, sink,
                      wait_index_s=1.0)
    change, message = _listing(100, "n1", "fresh snow ❄️ tg @plug today")
    replica.index.apply([change])
    replica.index.commit(None)
    assert await watcher.handle([message]) == 0  # no standing query yet
    assert await watcher.catch_up() == 0
    early.extend(queries)
    assert await watcher.catch_up() == 1  # no later listing needed
    assert [d.listing_id for d in sink.records("t.detections", Detection)
            if d.standing_query_id] == ["n1"]
    assert await watcher.catch_up() == 0  # caught up: nothing to search
    _, later = _listing(101, "n2", "vintage oak table")
    assert await watcher.handle([later]) == 0 and watcher.stats.searches == 2


async def test_every_match_of_a_batch_counts_not_just_a_top_n(settings):
    """A batch with more matches for one query than the query's exploration kept results:
    each scores at least min_score, so each is a detection."""
    replica, book, sink = await _explored(settings)
    watcher = Watcher(settings.standing, settings.topics, replica, book, sink,
                      wait_index_s=1.0)
    new = [_listing(100 + n, f"n{n}", f"snow ❄️ tg @plug batch {n}") for n in range(7)]
    replica.index.apply(c for c, _ in new)
    replica.index.commit(None)
    assert settings.exploration.results_per_query == 2
    assert await watcher.handle([m for _, m in new]) == 7


async def test_a_confirmed_listing_is_not_detected_again(settings):
    replica, book, sink = await _explored(settings)
    watcher = Watcher(settings.standing, settings.topics, replica, book, sink,
                      wait_index_s=1.0)
    change, message = _listing(100, "n1", "fresh snow ❄️ tg @plug today")
    replica.index.apply([change])
    replica.index.commit(None)
    replica.ledger.confirm(["n1"])
    assert await watcher.handle([message]) == 0


async def test_the_watcher_waits_for_the_batch_to_be_searchable(settings):
    replica, book, sink = await _explored(settings)
    change, message = _listing(100, "n1", "fresh snow ❄️ tg @plug today")
    replica.index.apply([change])
    waits = []

    async def caught_up(timeout_s: float, urgent: bool = True) -> bool:
        assert not urgent  # the watcher waits for the regular commit
        waits.append(timeout_s)
        if len(waits) < 3:
            return False
        replica.index.commit(None)
        return True

    replica.wait_caught_up = caught_up
    watcher = Watcher(settings.standing, settings.topics, replica, book, sink,
                      wait_index_s=0.5)
    assert await watcher.handle([message]) == 1 and len(waits) == 3


async def test_without_standing_queries_or_when_disabled_nothing_is_searched(settings):
    replica, _, sink = await _explored(settings)
    _, message = _listing(100, "n1", "fresh snow ❄️ tg @plug today")
    empty = Watcher(settings.standing, settings.topics, replica,
                    StandingBook(settings.standing), sink, wait_index_s=1.0)
    assert await empty.handle([message]) == 0 and empty.stats.searches == 0
    off = settings.replace(standing={"enabled": False}).standing
    disabled = Watcher(off, settings.topics, replica, StandingBook(off), sink,
                       wait_index_s=1.0)
    assert await disabled.handle([message]) == 0 and disabled.stats.listings == 0


def test_a_batch_is_the_offset_range_of_each_partition():
    messages = [RawMessage("t", p, o, None, None) for p, o in
                [(0, 5), (1, 9), (0, 3), (0, 7), (1, 8)]]
    assert arrivals_of(messages) == {0: (3, 7), 1: (8, 9)}


def test_a_query_searches_a_batch_from_where_its_exploration_stopped():
    query = StandingQuery(query_id="q" * 8, query="a", seed_id="s", extractor="e",
                          model_version="m", prompt_version="p", min_score=0, results=1,
                          watch_from=utcnow(), watch_offsets={0: 50, 1: 10}, ttl_s=60)
    batch = {0: (40, 60), 1: (20, 30), 2: (0, 5)}
    # first run on a partition: back to where the query starts (partition 2 unknown: all)
    assert arrivals_for(query, batch, set()) == {0: (50, 60), 1: (10, 30), 2: (0, 5)}
    # caught up: just the batch, never before the query's start
    assert arrivals_for(query, batch, {0, 1, 2}) == {0: (50, 60), 1: (20, 30), 2: (0, 5)}
    assert arrivals_for(query, {0: (10, 49)}, {0}) == {}  # all searched by its exploration


async def test_a_match_without_the_querys_evidence_is_no_detection(settings):
    """A standing query that returned fewer results than its limit has no score floor: a new
    listing sharing only a number with it must not fire (the ``AAA 1:1 watch`` on
    ``alert(1)`` case); with the evidence check off, it does."""
    replica, book, sink = await _explored(settings)
    book.put(next(iter(book.queries.values())).model_copy(update={
        "query_id": "q-aaa", "query": "AAA 1:1 watch", "min_score": 0.0}))
    new = [_listing(100, "n1", "<script>alert(1)</script> 1 test page"),
           _listing(101, "n2", "AAA 1:1 watch, swiss movement")]
    replica.index.apply(c for c, _ in new)
    replica.index.commit(None)
    watcher = Watcher(settings.standing, settings.topics, replica, book, sink,
                      wait_index_s=1.0)
    assert await watcher.handle([m for _, m in new]) == 1
    assert [d.listing_id for d in sink.records("t.detections", Detection)
            if d.standing_query_id == "q-aaa"] == ["n2"]
    assert watcher.stats.without_evidence >= 1
    off = settings.standing.model_copy(update={"evidence": False})
    loose = Watcher(off, settings.topics, replica, book, Sink(), wait_index_s=1.0)
    assert await loose.handle([new[0][1]]) == 1  # the number alone fired
