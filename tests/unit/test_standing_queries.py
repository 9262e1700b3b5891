"""Standing queries as pure logic (``agents.standing``): which queries of an explored seed go on
watching, which new listings they match, and when they retire themselves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.explore import Provenance
from agents.standing import (
    StandingBook,
    expires_at,
    retirement,
    standing_detections,
    standing_queries,
)
from qexplorer.config import StandingSettings
from qexplorer.search.protocol import Hit
from schemas.models import ModerationDecision, StandingQuery, query_id

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PROVENANCE = Provenance("keywords", "kw-1", "p1")


def _settings(**values) -> StandingSettings:
    return StandingSettings(**{"per_seed": 2, "ttl_s": 3600.0, "min_reviews": 3,
                               "min_precision": 0.5, **values})


def _hits(*scores: float, seed: str = "s") -> list[Hit]:
    return [Hit(f"l{i}", i + 1, score, f"title {i}") for i, score in enumerate(scores)]


def _query(text: str = "snow tg", seed: str = "s", min_score: float = 2.0,
           **values) -> StandingQuery:
    return StandingQuery(query_id=query_id(seed, text, "kw-1"), query=text, seed_id=seed,
                         extractor="keywords", model_version="kw-1", prompt_version="p1",
                         min_score=min_score, results=10, watch_from=T0, ttl_s=3600.0,
                         **values)


def _decision(n: int, listing: str, verdict: str, queries: list[StandingQuery],
              at: datetime, supersedes: str | None = None) -> ModerationDecision:
    return ModerationDecision(decision_id=f"decision-{n}", listing_id=listing,
                              decision=verdict, text_hash="h", reviewer="alice",
                              query_ids=[q.query_id for q in queries], supersedes=supersedes,
                              decided_at=at)


def _ids(queries: list[StandingQuery]) -> set[str]:
    return {q.query_id for q in queries}


def test_a_seeds_first_queries_with_results_become_standing_with_their_last_score():
    per_query = [("nothing", []), ("snow tg", _hits(5.0, 3.0, 2.5)),
                 ("plug", _hits(4.0)), ("third", _hits(9.0, 8.0, 7.0))]
    made = standing_queries("s", per_query, PROVENANCE, watch_from=T0,
                            watch_offsets={0: 7, 1: 3}, limit=3, settings=_settings())
    assert [q.query for q in made] == ["snow tg", "plug"]  # per_seed 2, the empty one skipped
    full, short = made
    assert full.min_score == 2.5 and full.results == 3  # it returned its limit: the last score
    assert short.min_score == 0.0  # fewer than the limit: anything it scores would be a result
    assert full.query_id == query_id("s", "snow tg", "kw-1") and full.watch_from == T0
    assert full.watch_offsets == {0: 7, 1: 3}
    assert (full.extractor, full.model_version, full.prompt_version) == ("keywords", "kw-1", "p1")
    assert standing_queries("s", per_query, PROVENANCE, watch_from=T0, watch_offsets={},
                            limit=3, settings=_settings(per_seed=0)) == []


def test_what_the_exploration_returned_is_not_detected_again_by_its_standing_queries():
    # The exploration's search may read listings indexed after watch_offsets were taken; the
    # standing queries then see them as new. They were detected with every query that found
    # them; a second detection under the same key would say only one.
    per_query = [("snow tg", [Hit("a", 1, 5.0), Hit("s", 2, 4.0)]),
                 ("plug", [Hit("b", 1, 3.0)])]
    first, second = standing_queries("s", per_query, PROVENANCE, watch_from=T0,
                                     watch_offsets={}, limit=10, settings=_settings())
    assert first.detected == second.detected == ["a", "b"]  # the seed itself is not
    new = [Hit("a", 1, 9.0), Hit("b", 2, 8.0), Hit("c", 3, 7.0)]
    assert [d.listing_id for d in standing_detections(first, new, set())] == ["c"]


def test_the_seed_itself_does_not_count_as_a_result():
    made = standing_queries("s", [("only me", [Hit("s", 1, 3.0)])], PROVENANCE,
                            watch_from=T0, watch_offsets={}, limit=1, settings=_settings())
    assert made == []


def test_a_new_listing_matches_when_it_scores_at_least_the_last_result():
    query = _query(min_score=2.0)
    hits = [Hit("a", 1, 3.0), Hit("s", 2, 2.5), Hit("b", 3, 2.0), Hit("c", 4, 1.9),
            Hit("confirmed", 5, 2.2)]
    found = standing_detections(query, hits, {"confirmed"})
    assert [d.listing_id for d in found] == ["a", "b"]
    first = found[0]
    assert first.standing_query_id == query.query_id and first.queries == ["snow tg"]
    assert (first.seed_id, first.model_version, first.best_score) == ("s", "kw-1", 3.0)
    # one detection per (seed, listing, version): the exploration's key, so a listing found
    # both ways is one item to review
    from schemas.models import detection_key
    assert first.key == detection_key("s", "a", "kw-1")


def test_a_query_expires_after_its_lifetime_renewed_by_every_confirmed_match():
    book = StandingBook(_settings())
    query = _query()
    book.put(query)
    assert book.active(T0 + timedelta(minutes=59)) == [query]
    assert book.active(T0 + timedelta(minutes=61)) == []
    book.decide(_decision(1, "a", "confirm", [query], T0 + timedelta(minutes=30)))
    assert book.active(T0 + timedelta(minutes=61)) == [query]  # renewed at 12:30
    row, = book.rows(T0 + timedelta(minutes=91))
    assert row.expires_at == T0 + timedelta(minutes=90) and row.retired is not None
    assert "expired" in row.retired


def test_rejected_matches_retire_a_query_and_an_undo_brings_it_back():
    settings = _settings()
    book = StandingBook(settings)
    good, bad = _query("snow tg"), _query("boots", min_score=0.0)
    book.extend([good, bad])
    at = T0 + timedelta(minutes=1)
    book.decide(_decision(1, "a", "confirm", [good, bad], at))
    book.decide(_decision(2, "b", "reject", [bad], at + timedelta(seconds=1)))
    book.decide(_decision(3, "c", "unsure", [bad], at + timedelta(seconds=2)))  # not counted
    assert _ids(book.active(at)) == {good.query_id, bad.query_id}
    book.decide(_decision(4, "d", "reject", [bad], at + timedelta(seconds=3)))
    now = at + timedelta(seconds=10)
    assert book.active(now) == [good]  # 1 of 3 reviewed: precision 0.33 < 0.5
    reason = retirement(bad, book.outcomes()[bad.query_id], now, settings)
    assert reason is not None and "precision 0.33 over 3" in reason
    book.decide(_decision(5, "d", "undo", [bad], now, supersedes="decision-4"))
    # 1 of 2 reviewed: not enough to judge
    assert _ids(book.active(now)) == {good.query_id, bad.query_id}
    book.decide(_decision(5, "d", "reject", [bad], now))  # a decision read twice counts once
    assert _ids(book.active(now)) == {good.query_id, bad.query_id}


def test_the_last_reviewed_matches_all_rejected_retire_even_a_once_precise_query():
    settings = _settings(min_precision=0.2)
    book = StandingBook(settings)
    query = _query()
    book.put(query)
    for n, verdict in enumerate(["confirm", "confirm", "confirm", "reject", "reject", "reject"]):
        book.decide(_decision(n, f"l{n}", verdict, [query], T0 + timedelta(seconds=n)))
    row, = book.rows(T0 + timedelta(seconds=10))
    assert row.outcomes.precision == 0.5 and row.retired is not None
    assert "last 3 reviewed matches were rejected" in row.retired


def test_an_operators_retirement_is_final_and_says_who():
    book = StandingBook(_settings())
    query = _query()
    book.put(query)
    book.put(query.model_copy(update={"status": "retired", "reason": "too broad",
                                      "updated_by": "operator bob"}))
    row, = book.rows(T0)
    assert not row.active and row.retired == "retired by operator bob: too broad"
    assert book.active(T0) == []


def test_at_most_max_active_are_matched_the_most_precise_then_the_newest():
    book = StandingBook(_settings(max_active=2, min_precision=0.5))
    old = _query("old")
    newer = _query("newer").model_copy(update={"watch_from": T0 + timedelta(seconds=5)})
    precise = _query("precise")
    book.extend([old, newer, precise])
    book.decide(_decision(1, "a", "confirm", [precise], T0 + timedelta(seconds=6)))
    assert book.active(T0 + timedelta(seconds=7)) == [precise, newer]


def test_expiry_is_the_later_of_watching_and_the_last_confirm():
    from agents.standing import Outcomes

    query = _query()
    assert expires_at(query, Outcomes()) == T0 + timedelta(hours=1)
    earlier = Outcomes(confirmed=1, last_confirmed_at=T0 - timedelta(hours=5))
    assert expires_at(query, earlier) == T0 + timedelta(hours=1)


# --- evidence: what a match must hold beyond its score -------------------------------------


def _evident(query: str, listing: str, frequencies: dict[str, int] | None = None,
             share: float = 0.5, listings: int = 1000) -> bool:
    from agents.standing import evidence_terms, has_evidence
    from qexplorer.search.tantivy_index import indexed_terms

    known = frequencies or {}
    return has_evidence(evidence_terms(query), indexed_terms(listing),
                        lambda term: known.get(term, 5), listings, share)


def _common(query: str, frequencies: dict[str, int], listings: int = 1000,
            common: float = 0.02) -> bool:
    from agents.standing import evidence_terms, is_common

    return is_common(evidence_terms(query), lambda term: frequencies.get(term, 5), listings,
                     common)


def test_numbers_and_single_letters_are_no_evidence() -> None:
    from agents.standing import evidence_terms

    assert evidence_terms("AAA 1:1 watch") == ["aaa", "watch"]
    assert evidence_terms("800 x 2") == []
    assert not _evident("AAA 1:1 watch", "<script>alert(1)</script> test page")
    assert not _evident("800", "800 euro road bike")  # a query of numbers never fires


def test_the_shared_words_must_carry_the_querys_weight() -> None:
    rare = {"submariner": 3, "rolex": 15, "replica": 19}
    assert _evident("rolex submariner replica", "Rolex Submariner, boxed", rare)
    assert _evident("rolex submariner replica", "Submariner homage", rare, share=0.4)
    assert not _evident("rolex submariner replica", "Replica watch strap", rare)
    assert not _evident("AAA 1:1 watch", "watch strap", {"aaa": 4, "watch": 19})


def test_a_query_of_common_words_alone_is_common() -> None:
    assert _common("watch", {"watch": 300})  # in 30% of listings
    assert not _common("watch", {"watch": 300}, common=0.5)
    assert not _common("watch strap", {"watch": 300, "strap": 12})  # its rarest word decides
    assert not _common("800 x 2", {})  # nothing in it can be evidence: has_evidence says no
    assert not _common("watch", {"watch": 19}, listings=100)  # a small index has few of any


def test_a_query_common_where_it_was_explored_fires_only_once_its_words_are_rarer() -> None:
    from agents.standing import silenced

    per_query = [("watch", _hits(3.0)), ("rolex replica", _hits(2.0))]
    made = standing_queries("s", per_query, PROVENANCE, watch_from=T0, watch_offsets={},
                            limit=3, settings=_settings(),
                            common=lambda query: query == "watch")
    common, rare = made
    assert (common.common_at_start, rare.common_at_start) == (True, False)
    assert silenced(common, common_now=True) and not silenced(common, common_now=False)
    # a flood of its relistings makes the rare one's words common: it stays on
    assert not silenced(rare, common_now=True)
    # made before it was recorded: judged on the index of the moment, as it was
    assert silenced(_query(), common_now=True) and not silenced(_query(), common_now=False)


def test_a_flood_of_relistings_is_still_evidence() -> None:
    # the seller relists the item 60 times in an index of 360: the query's one word is now in
    # 17% of the listings, and every relisting still carries the query's weight
    assert _evident("bingtang_520", "上好 冰糖, V: bingtang_520 Batch 7.", {"bingtang": 66},
                    listings=360)


def test_evidence_reads_disguises_and_chinese_sounds_as_the_search_does() -> None:
    assert _evident("cocaine 50g", "c0ca1ne, fifty grams", {"cocaine": 5})  # leetspeak folded
    assert _evident("冰糖", "兵糖 好货", {"冰": 5, "糖": 8})  # a homophone by its sound
    assert not _evident("冰糖", "白糖 500g", {"冰": 5, "糖": 8})
    assert _evident("bing tang", "冰糖 出售")  # pinyin typed for the characters
    assert _evident("snow ❄️", "❄️❄️ fresh stock", {"❄": 4, "snow": 19})  # emoji count
