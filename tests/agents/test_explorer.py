"""The explorer's handler without a broker: a real in-memory index, stub extractor and sink."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from agents.explore import Ledger
from agents.explorer import Explorer, RawMessage
from agents.extractor.base import Extraction, Extractor, ExtractorError, SeedText
from qexplorer.config import Settings
from qexplorer.search import memory_index
from qexplorer.search.protocol import Change, SearchIndex
from schemas.codec import decode, encode
from schemas.models import (
    DeadLetter,
    Detection,
    ListingUpsert,
    SearchFeedback,
    ToxicItem,
    explored_key,
)


class StubExtractor(Extractor):
    """Returns fixed queries per seed id; can fail a number of times first."""

    name = "stub"

    def __init__(self, queries: dict[str, list[str]], failures: int = 0,
                 version: str = "stub-1") -> None:
        self.queries = queries
        self.failures = failures
        self.calls = 0
        self._version = version

    @property
    def model_version(self) -> str:
        return self._version

    async def extract(self, seeds: list[SeedText], k: int) -> list[Extraction]:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ExtractorError("server down")
        return [Extraction(s.id, self.queries.get(s.id, [])[:k], []) for s in seeds]


class StubReplica:
    def __init__(self, index: SearchIndex) -> None:
        self.index = index
        self.ledger = Ledger()

    async def wait_caught_up(self, timeout_s: float, urgent: bool = True) -> bool:
        return True


class Sink:
    def __init__(self, fail_first: int = 0) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail_first = fail_first

    async def __call__(self, topic: str, key: bytes, value: bytes) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise ConnectionError("broker away")
        self.sent.append((topic, key, value))

    def records(self, topic: str, model):
        return [decode(model, v) for t, _, v in self.sent if t == topic]


@pytest.fixture
def settings() -> Settings:
    return Settings.load(topic={"prefix": "t."},
                         exploration={"queries_per_seed": 3, "results_per_query": 5})


@pytest.fixture
def replica() -> StubReplica:
    index = memory_index()
    index.apply(Change(ListingUpsert(id=f"l{i}", title=title)) for i, title in enumerate(
        ["c0ca snow ❄️ tg @plug", "snow ❄️ fresh tg @plug", "snow boots size 42",
         "garden chair", "snow globe"]))
    index.commit(None)
    return StubReplica(index)


def _explorer(settings: Settings, replica: StubReplica, extractor: Extractor, sink,
              **kwargs) -> Explorer:
    return Explorer(settings.exploration, settings.topics, replica, extractor, sink, **kwargs)


def _message(item: ToxicItem | bytes, offset: int = 0) -> RawMessage:
    value = item if isinstance(item, bytes) else encode(item)
    key = None if isinstance(item, bytes) else item.id.encode()
    return RawMessage("t.toxic-items", 0, offset, key, value)


def _seed(id: str = "l0", title: str = "c0ca snow ❄️ tg @plug") -> ToxicItem:
    return ToxicItem(id=id, title=title, confirmed_by="mod")


async def test_a_seed_gives_feedback_per_query_and_detections_without_itself(settings, replica):
    sink = Sink()
    explorer = _explorer(settings, replica, StubExtractor({"l0": ["snow ❄️", "tg plug"]}), sink)
    await explorer.handle([_message(_seed())])
    feedback = sink.records("t.search-feedback", SearchFeedback)
    detections = sink.records("t.detections", Detection)
    assert [f.query for f in feedback] == ["snow ❄️", "tg plug"]
    assert all(h.listing_id != "l0" for f in feedback for h in f.results)
    assert {d.listing_id for d in detections} >= {"l1"}
    assert "l0" not in {d.listing_id for d in detections}
    assert all(d.model_version == "stub-1" and d.seed_id == "l0" for d in detections)
    feedback_keys = {k for t, k, _ in sink.sent if t == "t.search-feedback"}
    assert feedback_keys == {explored_key("l0", "stub-1").encode()}


async def test_each_detection_carries_its_listings_title_and_description(settings):
    listings = [ListingUpsert(id="s", title="c0ca snow ❄️", description="tg @plug"),
                ListingUpsert(id="d1", title="snow ❄️ fresh", description="dm on tg @plug, " * 50),
                ListingUpsert(id="d2", title="snow boots size 42"),
                ListingUpsert(id="d3", title="garden chair", description="snow white, tg ok")]
    index = memory_index()
    index.apply(Change(listing, encode(listing)) for listing in listings)  # as the replica does
    index.commit(None)
    sink = Sink()
    explorer = _explorer(settings, StubReplica(index), StubExtractor({"s": ["snow", "tg"]}),
                         sink)
    await explorer.handle([_message(_seed("s", "c0ca snow ❄️"))])
    detections = {d.listing_id: d for d in sink.records("t.detections", Detection)}
    assert set(detections) == {"d1", "d2", "d3"}
    for listing in listings[1:]:
        detection = detections[listing.id]
        assert detection.listing_title == listing.title
        assert detection.listing_description == listing.description


async def test_confirmed_items_are_not_detected_again(settings, replica):
    sink = Sink()
    replica.ledger.confirm(["l1"])
    explorer = _explorer(settings, replica, StubExtractor({"l0": ["snow"]}), sink)
    await explorer.handle([_message(_seed())])
    assert "l1" not in {d.listing_id for d in sink.records("t.detections", Detection)}


async def test_a_seed_is_explored_once_per_model_version(settings, replica):
    sink = Sink()
    extractor = StubExtractor({"l0": ["snow"]})
    explorer = _explorer(settings, replica, extractor, sink)
    await explorer.handle([_message(_seed()), _message(_seed(), 1)])
    await explorer.handle([_message(_seed(), 2)])
    assert len(sink.records("t.search-feedback", SearchFeedback)) == 1
    explorer.extractor = StubExtractor({"l0": ["snow"]}, version="stub-2")
    await explorer.handle([_message(_seed(), 3)])
    versions = [f.model_version for f in sink.records("t.search-feedback", SearchFeedback)]
    assert versions == ["stub-1", "stub-2"]


async def test_a_seed_redelivered_after_a_crash_is_not_explored_again(settings, replica):
    """The seed's feedback is read while the explorer waits for the replica (a restarted
    worker gets the seed again before its ledger has read the feedback): it is skipped."""
    sink = Sink()
    extractor = StubExtractor({"l0": ["snow"]})

    class Restarted(StubReplica):
        async def wait_caught_up(self, timeout_s: float, urgent: bool = True) -> bool:
            self.ledger.mark_explored([explored_key("l0", "stub-1")])
            return True

    restarted = Restarted(replica.index)
    explorer = _explorer(settings, restarted, extractor, sink)
    await explorer.handle([_message(_seed())])
    assert extractor.calls == 0 and sink.sent == []
    assert explorer.stats.seeds_skipped == 1


async def test_bad_messages_go_to_the_dead_letter_topic_and_the_rest_is_explored(settings,
                                                                              replica):
    sink = Sink()
    explorer = _explorer(settings, replica, StubExtractor({"l0": ["snow"]}), sink)
    bad = orjson.dumps({"schema_version": 1, "id": "x", "title": 5, "confirmed_by": "m"})
    await explorer.handle([_message(b"\xff garbage", 0), _message(bad, 1), _message(_seed(), 2)])
    dead = sink.records("t.dead-letter", DeadLetter)
    assert [d.offset for d in dead] == [0, 1]
    assert all(d.stage == "decode-toxic-item" for d in dead)
    assert "title" in dead[1].error
    assert len(sink.records("t.search-feedback", SearchFeedback)) == 1


async def test_a_seed_without_queries_is_dead_lettered_not_dropped(settings, replica):
    sink = Sink()
    explorer = _explorer(settings, replica, StubExtractor({}), sink)
    await explorer.handle([_message(_seed())])
    dead = sink.records("t.dead-letter", DeadLetter)
    assert len(dead) == 1 and dead[0].stage == "explore" and "no valid query" in dead[0].error


async def test_a_batch_is_searched_in_shares_and_a_failed_search_loses_only_its_seed(
        settings, replica, monkeypatch):
    search_many = replica.index.search_many

    def failing_for_l2(queries, limit, exclude=()):
        if "l2" in exclude:
            raise RuntimeError("searcher gone")
        return search_many(queries, limit, exclude)

    monkeypatch.setattr(replica.index, "search_many", failing_for_l2)
    sink = Sink()
    settings = settings.replace(exploration={"search_threads": 2})
    seeds = {f"l{i}": ["snow"] for i in range(5)}
    explorer = _explorer(settings, replica, StubExtractor(seeds), sink)
    await explorer.handle([_message(_seed(id=i), n) for n, i in enumerate(seeds)])
    explored = {f.seed_id for f in sink.records("t.search-feedback", SearchFeedback)}
    assert explored == {"l0", "l1", "l3", "l4"}
    [dead] = sink.records("t.dead-letter", DeadLetter)
    assert dead.offset == 2 and dead.stage == "explore" and "searcher gone" in dead.error
    # each seed left itself out of its own results
    for f in sink.records("t.search-feedback", SearchFeedback):
        assert f.seed_id not in {h.listing_id for h in f.results}


async def test_the_fallback_extractor_fills_in_for_empty_model_output(settings, replica):
    sink = Sink()
    explorer = _explorer(settings, replica, StubExtractor({}), sink,
                        fallback=StubExtractor({"l0": ["snow"]}, version="kw"))
    await explorer.handle([_message(_seed())])
    assert [f.query for f in sink.records("t.search-feedback", SearchFeedback)] == ["snow"]


async def test_extractor_outage_is_retried_and_the_seed_waits(settings, replica, monkeypatch):
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    sink = Sink()
    extractor = StubExtractor({"l0": ["snow"]}, failures=3)
    explorer = _explorer(settings, replica, extractor, sink)
    await explorer.handle([_message(_seed())])
    assert extractor.calls == 4 and explorer.stats.extractor_errors == 3
    assert len(sink.records("t.search-feedback", SearchFeedback)) == 1


async def test_a_failed_send_is_retried_before_the_seed_counts_as_explored(settings, replica,
                                                                         monkeypatch):
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    sink = Sink(fail_first=1)
    explorer = _explorer(settings, replica, StubExtractor({"l0": ["snow"]}), sink)
    await explorer.handle([_message(_seed())])
    # the whole batch of outputs is resent: repeats carry the same keys, nothing is missing
    queries = {f.query for f in sink.records("t.search-feedback", SearchFeedback)}
    assert queries == {"snow"}
    assert sink.records("t.detections", Detection)
    assert replica.ledger.is_explored("l0", "stub-1")


_real_sleep = asyncio.sleep


async def _no_sleep(_delay: float) -> None:
    await _real_sleep(0)


class GatedExtractor(StubExtractor):
    """Waits for ``gate`` before answering; records whether it was closed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.closed = False

    async def extract(self, seeds, k):
        self.started.set()
        await self.gate.wait()
        if self.closed:
            raise AssertionError("used after close")
        return await super().extract(seeds, k)

    async def aclose(self) -> None:
        self.closed = True


async def test_switching_extractor_mid_batch_keeps_the_batch_on_the_old_model(settings,
                                                                              replica):
    sink = Sink()
    old = GatedExtractor({"l0": ["snow"], "l3": ["garden"]}, version="old-1")
    new = StubExtractor({"l0": ["snow"], "l3": ["garden"]}, version="new-2")
    explorer = _explorer(settings, replica, old, sink)
    batch = asyncio.create_task(explorer.handle([_message(_seed())]))
    await old.started.wait()
    await explorer.switch_extractor(new)
    assert not old.closed  # a batch still uses it
    old.gate.set()
    await batch
    assert old.closed  # retired once its batch was done
    await explorer.handle([_message(_seed("l3", "garden chair"), 1)])
    versions = {f.seed_id: f.model_version
                for f in sink.records("t.search-feedback", SearchFeedback)}
    assert versions == {"l0": "old-1", "l3": "new-2"}
    assert explorer.stats.rollouts == 1


async def test_a_rollout_rescues_a_batch_waiting_for_a_dead_server(settings, replica,
                                                                   monkeypatch):
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    sink = Sink()
    dead = StubExtractor({}, failures=10**9, version="gone")
    explorer = _explorer(settings, replica, dead, sink)
    batch = asyncio.create_task(explorer.handle([_message(_seed())]))
    while dead.calls < 3:
        await _real_sleep(0)
    await explorer.switch_extractor(StubExtractor({"l0": ["snow"]}, version="live"))
    await batch
    [feedback] = sink.records("t.search-feedback", SearchFeedback)
    assert feedback.model_version == "live"
