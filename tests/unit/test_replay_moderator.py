"""The replay's pure parts: the moderator's review queue, the summary, the stop rule, the plot."""

from __future__ import annotations

import orjson
import pytest

from qexplorer.marketplace.corpora import data_hash
from qexplorer.marketplace.items import LabelledItem
from qexplorer.simulation.replay import Moderator, plot_replay, stop_reason, summarise
from schemas.models import Detection, detection_key

ITEMS = [
    LabelledItem("s1", "seed one", harmful=True, cluster="a"),
    LabelledItem("h1", "toxic one", harmful=True, cluster="a"),
    LabelledItem("h2", "toxic two", harmful=True, cluster="a"),
    LabelledItem("h3", "toxic three", harmful=True, cluster="b"),
    LabelledItem("b1", "benign one"),
    LabelledItem("b2", "benign two"),
]


def det(seed: str, listing: str, version: str = "kw-1") -> Detection:
    return Detection(key=detection_key(seed, listing, version), seed_id=seed, listing_id=listing,
                     queries=["q"], best_rank=1, best_score=1.0, extractor="keywords",
                     model_version=version, prompt_version="v1")


def moderator(delay: float = 2.0) -> Moderator:
    return Moderator(ITEMS, ["s1"], delay_s=delay, start=100.0)


def test_nothing_is_judged_before_the_review_delay() -> None:
    m = moderator()
    assert m.observe(det("s1", "h1"), now=100.0)
    assert m.due(101.9) == []
    assert m.pending == 1 and m.next_due == 102.0
    [judgement] = m.due(102.0)
    assert (judgement.listing_id, judgement.harmful, judgement.confirm) == ("h1", True, True)
    assert judgement.observed_at == 100.0 and judgement.judged_at == 102.0
    assert m.pending == 0 and m.next_due is None


def test_judgements_come_out_in_due_order() -> None:
    m = moderator(delay=1.0)
    m.observe(det("s1", "b1"), now=100.0)
    m.observe(det("s1", "h1"), now=100.5)
    m.observe(det("s1", "h2"), now=103.0)
    assert [j.listing_id for j in m.due(102.0)] == ["b1", "h1"]
    assert [j.listing_id for j in m.due(110.0)] == ["h2"]


def test_an_order_takes_the_listings_it_names_first_and_the_rest_in_due_order() -> None:
    m = moderator(delay=1.0)
    for n, listing in enumerate(["b1", "h1", "h2", "h3"]):
        m.observe(det("s1", listing), now=100.0 + n / 10)
    # h3 is not due yet; b1 is not in the order, so it comes after the named ones
    assert [j.listing_id for j in m.due(101.25, limit=2, order=["h3", "h2", "b1"])] == [
        "h2", "b1"]
    assert [j.listing_id for j in m.due(110.0, order=["h3"])] == ["h3", "h1"]
    assert m.reviewed == 4 and m.pending == 0


def test_a_review_capacity_leaves_the_rest_due_in_order() -> None:
    m = moderator(delay=1.0)
    for n, listing in enumerate(["b1", "h1", "h2"]):
        m.observe(det("s1", listing), now=100.0 + n / 10)
    assert [j.listing_id for j in m.due(110.0, limit=2)] == ["b1", "h1"]
    assert m.reviewed == 2 and m.pending == 1 and m.next_due == 101.2
    assert [j.listing_id for j in m.due(110.0, limit=2)] == ["h2"]


def test_duplicates_by_key_and_by_listing_are_reviewed_once() -> None:
    m = moderator(delay=0.0)
    assert m.observe(det("s1", "b1"), now=100.0)
    assert not m.observe(det("s1", "b1"), now=100.1)  # same key
    assert not m.observe(det("h1", "b1"), now=100.2)  # same listing from another seed
    m.due(100.2)
    assert not m.observe(det("h3", "b1"), now=101.0)  # already reviewed
    assert m.reviewed == 1 and m.detections == 3 and m.duplicates == 2


def test_initial_seeds_are_never_sent_to_review() -> None:
    m = moderator(delay=0.0)
    assert not m.observe(det("h1", "s1"), now=100.0)
    assert m.due(200.0) == [] and m.reviewed == 0


def test_only_harmful_listings_are_confirmed_and_none_twice() -> None:
    m = moderator(delay=0.0)
    for listing in ("b1", "h1", "b2", "h2"):
        m.observe(det("s1", listing), now=100.0)
    judgements = m.due(100.0)
    assert {j.listing_id for j in judgements if j.confirm} == {"h1", "h2"}
    assert not any(j.confirm for j in judgements if not j.harmful)
    # a new seed finds one already confirmed: a duplicate, not a second confirmation
    assert not m.observe(det("h1", "h2"), now=101.0)
    m.observe(det("h1", "h3"), now=101.0)
    assert [j.listing_id for j in m.due(101.0) if j.confirm] == ["h3"]
    assert m.confirmed == {"s1", "h1", "h2", "h3"}
    assert m.harmful_found == 4 and m.true_reviewed == 3 and m.reviewed == 5


def test_rounds_follow_the_chain_of_seeds() -> None:
    m = moderator(delay=0.0)
    m.observe(det("s1", "h1"), now=100.0)
    [first] = m.due(100.0)
    m.observe(det("h1", "h3"), now=101.0)
    [second] = m.due(101.0)
    assert (first.round, second.round, m.rounds) == (1, 2, 2)


def test_unknown_listings_count_as_benign() -> None:
    m = moderator(delay=0.0)
    m.observe(det("s1", "nowhere"), now=100.0)
    [judgement] = m.due(100.0)
    assert not judgement.harmful and not judgement.confirm


def test_series_starts_with_the_seeds_and_grows_monotonically() -> None:
    m = moderator(delay=1.0)
    for t, listing in enumerate(("b1", "h1", "h2", "b2", "h3")):
        m.observe(det("s1", listing), now=100.0 + t)
    m.due(1000.0)
    series = m.series
    assert series[0] == {"elapsed_s": 0.0, "reviewed": 0, "harmful_found": 1,
                         "share_found": 0.25}
    assert [p["reviewed"] for p in series] == list(range(6))
    assert [p["harmful_found"] for p in series] == [1, 1, 2, 3, 3, 4]
    assert [p["elapsed_s"] for p in series] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert series[-1]["share_found"] == 1.0


def test_summarise() -> None:
    m = moderator(delay=0.0)
    for listing in ("b1", "h1", "h2", "b2"):
        m.observe(det("s1", listing), now=100.0)
    m.due(100.0)
    summary = summarise(m.series)
    assert summary["reviewed"] == 4 and summary["harmful_found"] == 3
    assert summary["new_harmful_found"] == 2 and summary["review_precision"] == 0.5
    assert summary["share_found"] == 0.75 and summary["initial_share_found"] == 0.25
    assert summary["reviews_to_half"] == 2
    with pytest.raises(ValueError):
        summarise([])


def test_stop_reason() -> None:
    common = {"started": 0.0, "idle_s": 5.0, "timeout_s": 100.0, "stall_s": 50.0}
    assert stop_reason(10.0, last_activity=6.0, pending=0, unexplored=0, **common) is None
    assert stop_reason(11.0, last_activity=6.0, pending=0, unexplored=0, **common) == "idle"
    assert stop_reason(30.0, last_activity=6.0, pending=1, unexplored=0, **common) is None
    assert stop_reason(30.0, last_activity=6.0, pending=0, unexplored=2, **common) is None
    assert stop_reason(56.0, last_activity=6.0, pending=0, unexplored=2, **common) == "stalled"
    assert stop_reason(100.0, last_activity=99.0, pending=3, unexplored=1,
                       **common) == "timeout"


def test_data_hash_depends_on_ids_and_labels_not_order() -> None:
    assert data_hash(ITEMS) == data_hash(list(reversed(ITEMS)))
    flipped = [LabelledItem("b1", "benign one", harmful=True), *ITEMS[:4], ITEMS[5]]
    assert data_hash(flipped) != data_hash(ITEMS)


def test_plot_writes_a_png(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    m = moderator(delay=0.0)
    for listing in ("b1", "h1", "h2"):
        m.observe(det("s1", listing), now=100.0)
    m.due(100.0)
    summary = {**summarise(m.series), "rounds": m.rounds}
    report = {"dataset": "tiny", "items": 6, "harmful": 4, "initial_fraction": 0.25,
              "review_delay_s": 0.0,
              "extractors": {"keywords": {"summary": summary, "series": m.series},
                             "empty": {"summary": summary, "series": []}}}
    path = plot_replay(report, tmp_path / "replay.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    orjson.dumps(report)  # the report is JSON as it is


def test_the_moderator_counts_what_only_standing_queries_found() -> None:
    m = moderator(delay=0.0)

    def standing(seed: str, listing: str, version: str = "kw-1") -> Detection:
        return det(seed, listing, version).model_copy(update={"standing_query_id": "q" * 8})

    m.observe(det("s1", "h1"), now=100.0)  # exploration only
    m.observe(standing("s1", "h2"), now=100.0)  # a standing query only
    m.observe(standing("s1", "h3"), now=100.0)
    m.observe(det("s1", "h3", "kw-2"), now=100.0)  # ...and a later exploration too
    m.observe(standing("s1", "b1"), now=100.0)  # benign: reviewed, never counted
    m.due(100.0)
    assert m.found_only_by_standing == 1 and m.found_by_standing == 2
