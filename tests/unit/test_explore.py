"""Merging per-query hits into detections and feedback; the ledger of explored seeds."""

from __future__ import annotations

from agents.explore import Ledger, Provenance, merge_hits
from qexplorer.search.protocol import Hit
from schemas.codec import decode, encode
from schemas.models import Detection, detection_key, explored_key

PROV = Provenance("keywords", "kw-1", "v1")


def test_one_detection_per_listing_with_every_query_that_hit_it() -> None:
    per_query = [
        ("snow", [Hit("a", 1, 5.0, "A"), Hit("b", 2, 4.0, "B")]),
        ("candy", [Hit("b", 1, 6.0, "B"), Hit("c", 2, 1.0, "C")]),
    ]
    detections, feedback = merge_hits("seed", per_query, excluded=set(), provenance=PROV)
    by_listing = {d.listing_id: d for d in detections}
    assert set(by_listing) == {"a", "b", "c"}
    assert by_listing["b"].queries == ["snow", "candy"]
    assert by_listing["b"].best_rank == 1 and by_listing["b"].best_score == 6.0
    assert by_listing["a"].key == detection_key("seed", "a", "kw-1")
    assert [f.query for f in feedback] == ["snow", "candy"]
    assert [h.listing_id for h in feedback[1].results] == ["b", "c"]


def test_seed_and_confirmed_items_are_not_detected_but_stay_in_feedback() -> None:
    per_query = [("snow", [Hit("seed", 1, 9.0), Hit("known", 2, 8.0), Hit("new", 3, 7.0)])]
    detections, feedback = merge_hits("seed", per_query, excluded={"known"}, provenance=PROV)
    assert [d.listing_id for d in detections] == ["new"]
    assert [h.listing_id for h in feedback[0].results] == ["known", "new"]


def test_a_detection_carries_the_listing_text_a_reviewer_needs() -> None:
    per_query = [
        ("snow", [Hit("a", 1, 5.0, "Fresh snow", "tg @plug, fast delivery")]),
        ("plug", [Hit("a", 2, 3.0, "Fresh snow", "tg @plug, fast delivery"),
                  Hit("b", 1, 4.0, "garden chair")]),
    ]
    detections, feedback = merge_hits("seed", per_query, excluded=set(), provenance=PROV)
    by_listing = {d.listing_id: d for d in detections}
    assert by_listing["a"].listing_title == "Fresh snow"
    assert by_listing["a"].listing_description == "tg @plug, fast delivery"
    assert by_listing["b"].listing_description == ""  # a listing without one
    # feedback records stay id, rank and score: the trainer needs no text
    assert "description" not in feedback[0].results[0].model_dump()


def test_a_detections_title_and_description_come_from_one_hit() -> None:
    # a hit without text (a backend that stores none) does not mix with one that has it
    per_query = [("q1", [Hit("a", 1, 2.0)]), ("q2", [Hit("a", 1, 3.0, "new title", "new text")])]
    [detection], _ = merge_hits("s", per_query, excluded=set(), provenance=PROV)
    assert (detection.listing_title, detection.listing_description) == ("new title", "new text")
    per_query = [("q1", [Hit("a", 1, 2.0, "", "only a description")]),
                 ("q2", [Hit("a", 1, 3.0, "a title", "another description")])]
    [detection], _ = merge_hits("s", per_query, excluded=set(), provenance=PROV)
    assert (detection.listing_title, detection.listing_description) == ("", "only a description")


def test_a_detections_text_is_capped_at_the_schemas_bounds() -> None:
    per_query = [("q", [Hit("a", 1, 1.0, "t" * 1_500, "d" * 25_000)])]
    [detection], _ = merge_hits("s", per_query, excluded=set(), provenance=PROV)
    assert detection.listing_title == "t" * 1_000
    assert detection.listing_description == "d" * 20_000
    # and it passes the topic's own validation
    assert decode(Detection, encode(detection)) == detection


def test_a_query_without_hits_still_gives_feedback() -> None:
    detections, feedback = merge_hits("s", [("nothing", [])], excluded=set(), provenance=PROV)
    assert detections == [] and len(feedback) == 1 and feedback[0].results == []


def test_detections_are_ordered_by_best_rank() -> None:
    per_query = [("q1", [Hit("x", 3, 1.0)]), ("q2", [Hit("y", 1, 1.0)])]
    detections, _ = merge_hits("s", per_query, excluded=set(), provenance=PROV)
    assert [d.listing_id for d in detections] == ["y", "x"]


def test_explored_key_depends_on_model_version() -> None:
    assert explored_key("s", "m1") != explored_key("s", "m2")


def test_explored_key_separates_seed_and_version() -> None:
    assert explored_key("s", "m") == explored_key("s", "m")
    assert explored_key("a", "bc") != explored_key("ab", "c")
    assert explored_key("a", "b") != explored_key("b", "a")


def test_the_ledger_knows_which_model_version_explored_which_seed() -> None:
    ledger = Ledger()
    assert not ledger.is_explored("s", "m1") and ledger.explored_count == 0
    ledger.mark_explored([explored_key("s", "m1"), explored_key("s", "m1")])
    assert ledger.is_explored("s", "m1")
    assert not ledger.is_explored("s", "m2") and not ledger.is_explored("t", "m1")
    assert ledger.explored_count == 1


def test_the_ledger_collects_confirmed_items_in_a_live_view() -> None:
    ledger = Ledger()
    confirmed = ledger.confirmed
    ledger.confirm(["a", "b"])
    ledger.confirm(iter(["b", "c"]))
    assert ledger.confirmed == {"a", "b", "c"}
    assert confirmed == {"a", "b", "c"}  # a view: later confirmations show through
