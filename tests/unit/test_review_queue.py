"""The review queue as pure state (one item per listing, priority, leases, decisions, undo,
confirms becoming seeds, rebuild from the topics) and what the pages compute from it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from qexplorer.review.present import (
    ModelReport,
    bar_chart,
    folded_term,
    highlight,
    model_reports,
    query_terms,
)
from qexplorer.review.queue import Conflict, ReviewError, ReviewQueue, UnknownListing
from qexplorer.search.normalize import TOKEN_PATTERN
from schemas.models import Detection, ModerationDecision, ToxicItem, detection_key, query_id

T0 = 1_700_000_000.0  # epoch seconds of "now" at the start of every test


def t(seconds: float) -> float:
    return T0 + seconds


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(t(seconds), UTC)


def det(listing: str, seed: str = "s1", version: str = "kw-1", queries: tuple = ("ivory",),
        rank: int = 1, title: str | None = None, description: str = "",
        when: float = 0.0) -> Detection:
    return Detection(key=detection_key(seed, listing, version), seed_id=seed, listing_id=listing,
                     listing_title=f"title of {listing}" if title is None else title,
                     listing_description=description, queries=list(queries), best_rank=rank,
                     best_score=1.0, extractor="keywords", model_version=version,
                     prompt_version="p1", detected_at=at(when))


def seed(seed_id: str, category: str) -> ToxicItem:
    return ToxicItem(id=seed_id, title=f"seed {seed_id}", category=category,
                     confirmed_by="moderator")


def queue_of(*detections: Detection, seeds: tuple = (), lease_s: float = 300.0,
             undo_s: float = 30.0) -> ReviewQueue:
    queue = ReviewQueue(lease_s=lease_s, undo_s=undo_s)
    for toxic in seeds:
        queue.apply_toxic_item(toxic)
    for detection in detections:
        queue.apply_detection(detection)
    return queue


def decided(queue: ReviewQueue, reviewer: str, listing: str, verdict: str, now: float = 0.0,
            **kwargs) -> ModerationDecision:
    """Decide and apply (what the web app does once the desk has the record)."""
    record = queue.decide(reviewer, listing, verdict, queue.items[listing].text_hash, t(now),
                          **kwargs)
    assert queue.apply_decision(record)
    return record


def pending_ids(queue: ReviewQueue) -> list[str]:
    return [i.listing_id for i in queue.pending()]


def test_one_item_per_listing_however_many_seeds_queries_and_versions_found_it() -> None:
    queue = queue_of(det("L1", "s1", "kw-1", ("ivory", "tusk"), rank=4),
                     det("L1", "s2", "kw-1", ("tusk pendant",), rank=2),
                     det("L1", "s1", "kw-2", ("ivory",), rank=7), det("L2"))
    queue.apply_detection(det("L1", "s2", "kw-1", ("tusk pendant",), rank=2))  # read twice
    assert sorted(queue.items) == ["L1", "L2"] and queue.depth() == 2
    item = queue.items["L1"]
    assert len(item.findings) == 3
    assert item.seed_ids == ["s1", "s2"] and item.model_versions == ["kw-1", "kw-2"]
    assert item.queries == ["ivory", "tusk", "tusk pendant"] and item.best_rank == 2


def test_a_decision_names_every_query_that_found_the_listing() -> None:
    """What the standing queries' precision is counted from: query_id of (seed, query,
    version) for each query of each detection of the listing, once each; an undo names the
    same queries."""
    queue = queue_of(det("L1", "s1", "kw-1", ("ivory", "tusk")),
                     det("L1", "s2", "kw-1", ("ivory",)), det("L1", "s1", "kw-2", ("ivory",)))
    record = decided(queue, "alice", "L1", "reject")
    assert record.query_ids == [query_id("s1", "ivory", "kw-1"), query_id("s1", "tusk", "kw-1"),
                                query_id("s2", "ivory", "kw-1"), query_id("s1", "ivory", "kw-2")]
    assert queue.undo("alice", t(1)).query_ids == record.query_ids


def test_more_seeds_come_first_then_more_queries_then_a_better_rank() -> None:
    queue = queue_of(det("low-rank", rank=5, when=0),
                     det("top-rank", rank=1, when=1),
                     det("many-queries", queries=("a", "b", "c"), rank=10, when=2),
                     det("many-seeds", "s1", rank=10, when=3), det("many-seeds", "s2", rank=10))
    assert pending_ids(queue) == ["many-seeds", "many-queries", "top-rank", "low-rank"]
    assert pending_ids(queue_of(det("b", when=5), det("a", when=9), det("c", when=1))) == [
        "c", "b", "a"]  # ties: found earlier first
    parts = queue.priority(queue.items["many-seeds"])
    assert (parts.seeds, parts.queries, parts.rank, parts.category) == pytest.approx(
        (3.169925, 1.0, 0.1, 0.5))


def test_the_confirm_rate_of_a_category_reorders_its_items() -> None:
    queue = queue_of(det("w1", "sw", when=0), det("w2", "sw", when=1),
                     det("d1", "sd", when=2), det("d2", "sd", when=3),
                     seeds=(seed("sw", "weapons"), seed("sd", "drugs")))
    assert pending_ids(queue) == ["w1", "w2", "d1", "d2"]
    decided(queue, "alice", "d1", "confirm")
    assert queue.confirm_rate("drugs") == pytest.approx(2 / 3)
    assert pending_ids(queue) == ["d2", "w1", "w2"]
    decided(queue, "alice", "w1", "reject")
    assert queue.confirm_rate("weapons") == pytest.approx(1 / 3)
    assert queue.priority(queue.items["w2"]).category == pytest.approx(1 / 3)
    assert pending_ids(queue) == ["d2", "w2"]


def test_an_item_leased_to_one_reviewer_goes_to_nobody_else_until_the_lease_expires() -> None:
    queue = queue_of(det("L1"), lease_s=60)
    assert queue.take("alice", t(0)).listing_id == "L1"
    assert queue.take("bob", t(59)) is None
    assert queue.take("alice", t(30)).listing_id == "L1"  # the holder keeps it (and renews)
    assert queue.take("bob", t(89)) is None
    assert queue.take("bob", t(91)).listing_id == "L1"
    assert queue.take("alice", t(92)) is None
    two = queue_of(det("L1", rank=1), det("L2", rank=2))
    assert [two.take(r, t(0)).listing_id for r in ("alice", "bob")] == ["L1", "L2"]
    assert two.leases(t(1)) == 2


def test_decide_refuses_an_item_leased_to_someone_else() -> None:
    queue = queue_of(det("L1"))
    item = queue.take("alice", t(0))
    with pytest.raises(Conflict):
        queue.decide("bob", "L1", "confirm", item.text_hash, t(10))
    decided(queue, "alice", "L1", "confirm", now=11)  # bob's refusal held nothing
    assert queue.decisions["L1"].reviewer == "alice"


def test_decide_refuses_an_unknown_listing_and_an_unknown_verdict() -> None:
    queue = queue_of(det("L1"))
    with pytest.raises(UnknownListing):
        queue.decide("alice", "nope", "confirm", "x", t(0))
    with pytest.raises(ReviewError):
        queue.decide("alice", "L1", "undo", queue.items["L1"].text_hash, t(0))
    assert queue.depth() == 1


def test_decide_refuses_a_text_the_reviewer_did_not_see() -> None:
    queue = queue_of(det("L1", title="old"))
    seen = queue.items["L1"].text_hash
    queue.apply_detection(det("L1", "s2", title="new", when=10))
    with pytest.raises(Conflict, match="changed"):
        queue.decide("alice", "L1", "confirm", seen, t(20))
    assert queue.depth() == 1


def test_decide_refuses_a_decided_listing_and_one_being_recorded() -> None:
    queue = queue_of(det("L1"), det("L2"))
    decided(queue, "alice", "L1", "reject")
    with pytest.raises(Conflict):
        queue.decide("bob", "L1", "confirm", queue.items["L1"].text_hash, t(1))
    first = queue.decide("alice", "L2", "confirm", queue.items["L2"].text_hash, t(2))
    with pytest.raises(Conflict, match="being recorded"):
        queue.decide("alice", "L2", "reject", queue.items["L2"].text_hash, t(3))
    assert queue.depth() == 0  # held while it is published
    queue.abandon("L2")  # the desk failed: decidable again
    assert pending_ids(queue) == ["L2"]
    queue.apply_decision(queue.decide("alice", "L2", "reject", first.text_hash, t(4)))
    assert queue.decisions["L2"].decision == "reject"


def test_a_decided_listing_comes_back_only_with_a_newer_different_text() -> None:
    queue = queue_of(det("L1", title="ivory pendant", when=10))
    decided(queue, "alice", "L1", "reject", now=20)
    assert queue.take("alice", t(21)) is None and queue.take("bob", t(21)) is None
    queue.apply_detection(det("L1", "s2", title="ivory pendant", when=30))  # same text
    queue.apply_detection(det("L1", "s3", title="older other text", when=5))  # older
    assert queue.depth() == 0
    queue.apply_detection(det("L1", "s4", title="ivory pendant, real tusk", when=40))
    assert queue.take("bob", t(41)).title == "ivory pendant, real tusk"
    decided(queue, "bob", "L1", "confirm", now=42)
    assert queue.depth() == 0 and queue.decisions["L1"].reviewer == "bob"


def test_apply_decision_is_idempotent_by_decision_id() -> None:
    live = queue_of(det("L1", "sd"), det("L2", "sd"), det("L3"), seeds=(seed("sd", "drugs"),))
    records = [decided(live, "alice", "L1", "confirm"), decided(live, "bob", "L2", "reject")]
    records.append(live.undo("bob", t(5)))
    live.apply_decision(records[-1])

    def state(queue: ReviewQueue) -> tuple:
        return (pending_ids(queue), queue.decisions, len(queue.history),
                queue.confirm_rate("drugs"), queue.last_decision("alice"))

    replayed = queue_of(det("L1", "sd"), det("L2", "sd"), det("L3"), seeds=(seed("sd", "drugs"),))
    assert [replayed.apply_decision(r) for r in records] == [True, True, True]
    once = state(replayed)
    assert [replayed.apply_decision(r) for r in records + records] == [False] * 6
    assert state(replayed) == once == state(live)
    assert once[0] == ["L2", "L3"] and once[3] == pytest.approx(2 / 3)


def test_undo_puts_the_listing_back_and_forgets_its_category_count() -> None:
    queue = queue_of(det("L1", "sd"), seeds=(seed("sd", "drugs"),))
    confirm = decided(queue, "alice", "L1", "confirm")
    undo = queue.undo("alice", t(5))
    assert (undo.decision, undo.supersedes, undo.listing_id) == ("undo", confirm.decision_id, "L1")
    assert queue.depth() == 0  # in flight until applied
    queue.apply_decision(undo)
    queue.lease("alice", "L1", t(5))
    assert pending_ids(queue) == ["L1"] and "L1" not in queue.decisions
    assert queue.confirm_rate("drugs") == 0.5 and queue.last_decision("alice") is None
    assert queue.take("bob", t(6)) is None and queue.take("alice", t(6)).listing_id == "L1"
    with pytest.raises(ReviewError, match="nothing to undo"):
        queue.undo("alice", t(7))


def test_undo_is_refused_for_a_confirm_that_is_a_seed_or_handed_out_as_one() -> None:
    queue = queue_of(det("L1"), det("L2"), undo_s=30)
    decided(queue, "alice", "L1", "confirm")
    queue.apply_toxic_item(seed("L1", "drugs"))  # the toxic item is read back
    with pytest.raises(Conflict, match="seed"):
        queue.undo("alice", t(1))
    decided(queue, "bob", "L2", "confirm", now=2)
    assert [s.id for s in queue.due_seeds(t(40))] == ["L2"]
    with pytest.raises(Conflict, match="seed"):
        queue.undo("bob", t(41))


def test_the_last_decision_is_the_latest_made_whatever_order_a_rebuild_reads_them_in() -> None:
    live = queue_of(det("A"), det("B"))
    first = decided(live, "alice", "A", "reject", now=1)
    second = decided(live, "alice", "B", "unsure", now=2)
    rebuilt = queue_of(det("A"), det("B"))
    for record in (second, first):  # B's partition read before A's
        rebuilt.apply_decision(record)
    assert rebuilt.last_decision("alice") == live.last_decision("alice") == second
    assert rebuilt.undo("alice", t(3)).supersedes == second.decision_id


def test_undo_is_offered_for_a_confirm_only_inside_its_window() -> None:
    queue = queue_of(det("L1"), det("L2"), undo_s=30)
    confirm = decided(queue, "alice", "L1", "confirm", now=10)
    assert queue.undo_deadline(confirm) == t(40)
    assert queue.last_decision("alice", t(39)) == confirm
    assert queue.last_decision("alice", t(40)) is None  # the window closed: not offered
    reject = decided(queue, "alice", "L2", "reject", now=50)
    assert queue.last_decision("alice", t(5000)) == reject  # a reject has no window


def test_up_next_is_the_order_the_reviewer_is_given_items_in() -> None:
    queue = queue_of(det("a", rank=1), det("b", rank=2), det("c", rank=3), det("d", rank=4))
    held = queue.take("alice", t(0))
    assert held.listing_id == "a"
    queue.skip("alice", "a", t(1))
    assert queue.take("alice", t(2)).listing_id == "b"
    upcoming = [i.listing_id for i in queue.upcoming("alice", t(2), 10, exclude="b")]
    assert upcoming == ["c", "d", "a"]  # what they skipped comes last, as take serves it
    assert queue.take("bob", t(3)).listing_id == "a"  # alice gave it back: bob holds it now
    assert [i.listing_id for i in queue.upcoming("alice", t(3), 10, exclude="b")] == ["c", "d"]


def test_a_confirm_becomes_one_toxic_item_with_the_full_text_after_the_undo_window() -> None:
    queue = queue_of(det("L1", "sd", title="Ivory pendant", description="Real tusk, discreet"),
                     seeds=(seed("sd", "wildlife"),), undo_s=30)
    confirm = decided(queue, "alice", "L1", "confirm", now=10)
    assert queue.due_seeds(t(39)) == []
    [toxic] = queue.due_seeds(t(41))
    assert (toxic.id, toxic.title, toxic.description) == ("L1", "Ivory pendant",
                                                          "Real tusk, discreet")
    # a blank category stays blank: the seed's category is no label anybody gave this listing
    assert (toxic.confirmed_by, toxic.confirmed_at, toxic.category) == (
        "alice", confirm.decided_at, "")
    assert queue.due_seeds(t(42)) == [] and queue.due_seeds(t(1000)) == []
    queue.unsend(["L1"])  # its publication failed: offered again
    assert [s.id for s in queue.due_seeds(t(43))] == ["L1"]
    other = queue_of(det("L1", "sd"), seeds=(seed("sd", "wildlife"),), undo_s=0)
    decided(other, "alice", "L1", "confirm", category="weapons")  # the reviewer's wins
    assert [s.category for s in other.due_seeds(t(1))] == ["weapons"]


def test_no_toxic_item_for_a_reject_an_unsure_or_a_listing_already_toxic() -> None:
    queue = queue_of(det("L1"), det("L2"), det("L3"), undo_s=0)
    decided(queue, "alice", "L1", "reject")
    decided(queue, "alice", "L2", "unsure")
    decided(queue, "alice", "L3", "confirm")
    queue.apply_toxic_item(seed("L3", "drugs"))  # another process published it already
    assert queue.due_seeds(t(100)) == []


def test_no_toxic_item_while_the_undo_of_the_confirm_is_being_recorded() -> None:
    queue = queue_of(det("L1"), undo_s=30)
    decided(queue, "alice", "L1", "confirm")
    undo = queue.undo("alice", t(29))  # the desk is publishing it...
    assert queue.due_seeds(t(31)) == []  # ...when the seed loop runs
    queue.apply_decision(undo)
    assert pending_ids(queue) == ["L1"]


def test_a_rebuild_from_the_topics_gives_the_live_queue() -> None:
    seeds = [seed("sd", "drugs"), seed("sw", "weapons")]
    detections = [det("L1", "sd", when=0), det("L1", "sw", "kw-2", when=1),
                  det("L2", "sd", when=2), det("L3", "sw", when=3), det("L4", "sw", when=4),
                  det("L5", "sd", rank=3, when=5)]
    live = queue_of(*detections, seeds=seeds, undo_s=30)
    decisions = [decided(live, "alice", "L1", "confirm", now=10),
                 decided(live, "bob", "L2", "reject", now=11),
                 decided(live, "bob", "L3", "unsure", now=12)]
    decisions.append(live.undo("bob", t(13)))
    live.apply_decision(decisions[-1])
    later = det("L2", "sw", title="new text", when=20)
    detections.append(later)
    live.apply_detection(later)
    toxic = live.due_seeds(t(50))
    for item in toxic:
        live.apply_toxic_item(item)
    decisions.append(decided(live, "alice", "L4", "reject", now=60))
    assert [s.id for s in toxic] == ["L1"]
    rebuilt = queue_of(*detections, seeds=(*seeds, *toxic), undo_s=30)
    for record in decisions + decisions:  # read at least once
        rebuilt.apply_decision(record)
    assert pending_ids(rebuilt) == pending_ids(live) == ["L2", "L3", "L5"]
    assert rebuilt.decisions == live.decisions
    assert set(rebuilt.seeds) == set(live.seeds)
    assert rebuilt.due_seeds(t(1000)) == []
    for reviewer in ("alice", "bob"):
        assert rebuilt.last_decision(reviewer) == live.last_decision(reviewer)


def test_highlight_marks_query_words_case_insensitively_and_whole_words_only() -> None:
    terms = query_terms(["IVORY Pendant"])
    assert highlight("Carved ivory PENDANT, ivorycoast", terms) == [
        ("Carved ", False), ("ivory", True), (" ", False), ("PENDANT", True),
        (", ivorycoast", False)]
    assert highlight("plain text", query_terms(["other"])) == [("plain text", False)]
    assert highlight("", {"x"}) == []


def test_highlight_marks_han_characters_and_emoji_one_by_one() -> None:
    assert highlight("出售象牙手镯", query_terms(["象牙"])) == [
        ("出售", False), ("象", True), ("牙", True), ("手镯", False)]
    assert highlight("Pills💊 now🔥", query_terms(["💊 pills"])) == [
        ("Pills", True), ("💊", True), (" now🔥", False)]


def test_highlight_marks_disguised_words_the_search_matched() -> None:
    terms = query_terms(["cash prize"])
    assert highlight("Win ｃａｓｈ now, ＰＲＩＺＥ", terms) == [
        ("Win ", False), ("ｃａｓｈ", True), (" now, ", False), ("ＰＲＩＺＥ", True)]
    # and a disguised query marks the clean word
    assert highlight("cash prize", query_terms(["ｃａｓｈ"])) == [("cash", True), (" prize", False)]


TOKENS = regex.compile(TOKEN_PATTERN, regex.V1)  # the index's analyzer
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60) | \
    st.text("aAbB象牙💊 ,.-İı", max_size=30)


@given(text=TEXT, cuts=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=4),
       extra=st.lists(st.text(max_size=8), max_size=3))
def test_highlight_gives_the_text_back_and_marks_only_query_terms(text, cuts, extra) -> None:
    queries = [text[a:b].upper() for a, b in cuts] + extra
    terms = query_terms(queries)
    segments = highlight(text, terms)
    assert "".join(s for s, _ in segments) == text
    assert all(segment for segment, _ in segments)
    assert all(segment.lower() in terms or folded_term(segment) in terms
               for segment, hit in segments if hit)
    matched = [m.group() for m in TOKENS.finditer(text)
               if m.group().lower() in terms or folded_term(m.group()) in terms]
    assert [segment for segment, hit in segments if hit] == matched


def _reports_queue() -> ReviewQueue:
    queue = queue_of(det("L1", "s1", "kw-1"), det("L1", "s2", "kw-1"), det("L2", "s1", "kw-1"),
                     det("L3", "s1", "kw-1"), det("L4", "s1", "kw-1"), det("L5", "s1", "kw-1"),
                     det("L1", "s1", "kw-2", when=5), det("L3", "s1", "kw-3"))
    decided(queue, "alice", "L1", "confirm", now=0)
    decided(queue, "alice", "L2", "reject", now=86400)
    decided(queue, "alice", "L3", "unsure", now=3 * 86400)
    decided(queue, "alice", "L4", "reject", now=3 * 86400)
    queue.apply_detection(det("L4", "s3", "kw-1", title="changed", when=4 * 86400))
    return queue


def test_model_reports_count_per_model_version() -> None:
    reports = {r.version: r for r in model_reports(_reports_queue())}
    one, two = reports["kw-1"], reports["kw-2"]
    assert (one.detections, one.listings, one.reviewed, one.waiting) == (7, 5, 3, 2)
    assert (one.confirmed, one.rejected, one.unsure, one.precision) == (1, 1, 1, 0.5)
    assert (two.detections, two.listings, two.reviewed, two.confirmed, two.precision) == (
        1, 1, 1, 1, 1.0)
    assert (reports["kw-3"].reviewed, reports["kw-3"].precision) == (1, None)  # unsure only
    day = at(0).date()
    assert one.reviewed_by_day == {day: 1, day + timedelta(days=1): 1,
                                   day + timedelta(days=3): 1}
    assert one.confirmed_by_day == {day: 1}
    assert [b.value for b in bar_chart(one)] == [1, 0, 0, 0]  # days 0 to 3


def test_model_reports_put_the_version_with_the_newest_detection_first() -> None:
    queue = queue_of(det("L1", "s1", "a-old", when=0), det("L1", "s1", "b-new", when=100))
    assert [r.version for r in model_reports(queue)] == ["b-new", "a-old"]


def test_bar_chart_has_a_bar_for_every_day_from_first_to_last_review() -> None:
    first = date(2024, 2, 27)
    report = ModelReport("kw-1", reviewed_by_day={first: 4, first + timedelta(days=3): 2},
                         confirmed_by_day={first: 2, first + timedelta(days=3): 2})
    bars = bar_chart(report, width=400, height=200)
    assert [b.day for b in bars] == ["2024-02-27", "2024-02-28", "2024-02-29", "2024-03-01"]
    assert [b.value for b in bars] == [2, 0, 0, 2] and [b.reviewed for b in bars] == [4, 0, 0, 2]
    assert [b.height for b in bars] == [100, 0, 0, 100]
    assert [b.y for b in bars] == [100, 200, 200, 100]
    assert all(a.x + a.width <= b.x for a, b in pairwise(bars))
    assert bars[-1].x + bars[-1].width <= 400
    assert bar_chart(ModelReport("none")) == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 5), st.integers(1, 4),
                          st.integers(1, 12)), min_size=1, max_size=60),
       st.lists(st.tuples(st.integers(0, 30), st.sampled_from(["confirm", "reject"])),
                max_size=20),
       st.integers(1, 12))
def test_the_first_items_without_scoring_all_are_the_first_of_the_full_order(
        finds, verdicts, limit) -> None:
    categories = ("drugs", "scam", "wildlife")
    queue = queue_of(seeds=tuple(seed(f"s{i}", categories[i % 3]) for i in range(6)))
    for listing, seed_no, queries, rank in finds:
        queue.apply_detection(det(f"l{listing}", seed=f"s{seed_no}", rank=rank,
                                  queries=tuple(f"q{k}" for k in range(queries))))
    for listing, verdict in verdicts:
        if f"l{listing}" in queue.items and queue.is_pending(queue.items[f"l{listing}"]):
            decided(queue, "alice", f"l{listing}", verdict)
    full = queue.pending()
    assert queue.pending(limit) == full[:limit]
    taken = queue.take("bob", t(0))
    assert taken is (full[0] if full else None)
