"""Review-budget curves: the in-process replay, its arithmetic and its report."""

from __future__ import annotations

import json

import pytest

from agents.extractor.base import Extraction, Extractor, SeedText
from agents.extractor.keywords import KeywordsExtractor
from agents.extractor.priors import TermCounts
from qexplorer.evaluation.scoring import Searcher
from qexplorer.marketplace.corpora import split_seeds
from qexplorer.marketplace.items import LabelledItem
from qexplorer.marketplace.synthetic import generate_marketplace
from qexplorer.simulation.curves import (
    compare,
    found_at,
    initial_seeds,
    replay_market,
    reviews_at,
    run_curves,
    simulate,
)

#: s -> a (shares "zqx pills") -> b (shares "delivered tonight" with a only); bike shares
#: "cheap" with the seed and is innocent.
CHAIN = [
    LabelledItem("s", "zqx pills cheap fast", harmful=True, cluster="c"),
    LabelledItem("a", "zqx pills delivered tonight", harmful=True, cluster="c"),
    LabelledItem("b", "delivered tonight kwv powder", harmful=True, cluster="c"),
    LabelledItem("bike", "used bike cheap"),
    LabelledItem("sofa", "nice sofa for sale"),
    LabelledItem("lamp", "old brass lamp"),
]


def series(*points: tuple[int, int]) -> list[dict]:
    return [{"reviewed": r, "harmful_found": f} for r, f in points]


def test_a_confirmed_detection_is_explored_and_finds_what_the_seed_could_not() -> None:
    confirmed = TermCounts([SeedText("s", "zqx pills cheap fast")])
    found = simulate(Searcher(CHAIN), KeywordsExtractor("first_words"), CHAIN, [CHAIN[0]],
                     confirmed=confirmed, k=2).series
    assert [(p["reviewed"], p["harmful_found"]) for p in found] == [(0, 1), (1, 2), (2, 2),
                                                                    (3, 3)]
    assert confirmed.toxic_count() == 3  # a contrast extractor would now know a and b
    assert reviews_at(found, 2) == 3 and found_at(found, 2) == 1


def test_max_reviews_stops_the_replay() -> None:
    found = simulate(Searcher(CHAIN), KeywordsExtractor("first_words"), CHAIN, [CHAIN[0]],
                     k=2, max_reviews=1).series
    assert found[-1]["reviewed"] == 2  # the round in review is finished, nothing after it


def test_the_replay_leaves_what_the_topics_would_hold() -> None:
    replay = simulate(Searcher(CHAIN), KeywordsExtractor("first_words"), CHAIN, [CHAIN[0]], k=2)
    snapshot = replay.snapshot
    assert [t.id for t in snapshot.toxic] == ["s", "a", "b"]
    assert [t.confirmed_at for t in snapshot.toxic] == sorted(t.confirmed_at for t in
                                                              snapshot.toxic)
    assert {d.listing_id: d.decision for d in snapshot.decisions} == {
        "a": "confirm", "bike": "reject", "b": "confirm"}
    assert {f.seed_id for f in snapshot.feedback} == {"s", "a", "b"}
    assert replay.retrained is None


def test_a_promoted_retraining_takes_over_and_re_explores_the_confirmed_seeds() -> None:
    calls = []

    def retrain(snapshot, current):
        calls.append((len(snapshot.decisions), current.model_version))
        return KeywordsExtractor("yake"), {"decision": "promoted", "reason": "test"}

    replay = simulate(Searcher(CHAIN), KeywordsExtractor("first_words"), CHAIN, [CHAIN[0]],
                      k=2, retrain=retrain, retrain_at=2)
    assert calls == [(2, KeywordsExtractor("first_words").model_version)]
    assert replay.retrained == {"decision": "promoted", "reason": "test", "at_reviews": 2}
    by_version = {}
    for f in replay.snapshot.feedback:
        by_version.setdefault(f.model_version, set()).add(f.seed_id)
    # s and a were explored before the switch and again after it; b only by the new extractor
    assert by_version == {KeywordsExtractor("first_words").model_version: {"s", "a"},
                          KeywordsExtractor("yake").model_version: {"s", "a", "b"}}
    assert replay.series[-1]["harmful_found"] == 3


def test_a_review_capacity_explores_and_retrains_after_that_many_reviews() -> None:
    calls = []

    def retrain(snapshot, current):
        calls.append(len(snapshot.decisions))
        return current, {"decision": "refused", "reason": "test"}

    whole = simulate(Searcher(CHAIN), KeywordsExtractor("first_words"), CHAIN, [CHAIN[0]], k=2,
                     retrain=retrain, retrain_at=1)
    paced = simulate(Searcher(CHAIN), KeywordsExtractor("first_words"), CHAIN, [CHAIN[0]], k=2,
                     retrain=retrain, retrain_at=1, per_round=1)
    # s's round holds a and bike: the whole round is reviewed before the retraining, one a
    # round lets it come after the first review
    assert calls == [2, 1]
    assert whole.retrained["at_reviews"] == 2 and paced.retrained["at_reviews"] == 1
    assert paced.series[-1] == whole.series[-1]  # the same found in the end, here


class Fixed(Extractor):
    """The same queries for every seed."""

    name = "fixed"

    def __init__(self, queries: list[str]) -> None:
        self.queries = queries

    @property
    def model_version(self) -> str:
        return "fixed-1"

    async def extract(self, seeds: list[SeedText], k: int) -> list[Extraction]:
        return [Extraction(seed_id=s.id, queries=self.queries[:k], raw=[]) for s in seeds]


def test_the_priority_order_reviews_what_more_queries_found_first() -> None:
    market = [LabelledItem("s", "alpha beta gamma", harmful=True, cluster="c"),
              LabelledItem("x0", "delta sale"),
              LabelledItem("h1", "alpha beta gamma again", harmful=True, cluster="c"),
              LabelledItem("x1", "lamp")]
    # delta's hit arrives first; h1 is found by three queries
    extractor = Fixed(["delta", "alpha", "beta", "gamma"])
    first = {order: simulate(Searcher(market), extractor, market, [market[0]], k=4,
                             max_reviews=1, per_round=1, order=order).snapshot.decisions
             for order in ("arrival", "priority")}
    assert [d.listing_id for d in first["arrival"]] == ["x0"]
    assert [d.listing_id for d in first["priority"]] == ["h1"]
    with pytest.raises(ValueError, match="order"):
        simulate(Searcher(market), extractor, market, [market[0]], order="newest")


def test_a_refused_retraining_changes_nothing() -> None:
    def refuse(snapshot, current):
        return current, {"decision": "refused", "reason": "test"}

    plain = simulate(Searcher(CHAIN), KeywordsExtractor("first_words"), CHAIN, [CHAIN[0]], k=2)
    gated = simulate(Searcher(CHAIN), KeywordsExtractor("first_words"), CHAIN, [CHAIN[0]], k=2,
                     retrain=refuse, retrain_at=1)
    assert gated.series == plain.series and gated.retrained["decision"] == "refused"


def test_found_at_counts_beyond_the_initial_seeds_and_keeps_what_a_dry_run_found() -> None:
    s = series((0, 3), (1, 4), (2, 4), (3, 6))
    assert [found_at(s, r) for r in (0, 1, 2, 3, 50)] == [0, 1, 1, 3, 3]
    assert [reviews_at(s, f) for f in (1, 3, 4)] == [1, 3, None]


def test_compare_pairs_each_method_with_the_best_heuristic_at_each_budget() -> None:
    runs = {"yake": [series((0, 1), (4, 2), (8, 3))] * 3,
            "first_words": [series((0, 1), (4, 1), (8, 2))] * 3,
            "model": [series((0, 1), (4, 3), (8, 5))] * 3}
    report = compare(runs, to_find=4, budgets=(1.0, 2.0), targets=(0.5,))
    assert list(report["model"]["found_at"]) == ["4", "8"]
    assert report["model"]["found_at"]["8"]["mean"] == 4
    assert report["model"]["vs_best_heuristic"]["8"] == {"best": "yake", "mean": 2,
                                                         "ci95": [2, 2]}
    assert report["first_words"]["vs_best_heuristic"]["4"]["mean"] == -1
    assert report["model"]["reviews_to"]["0.5"] == {"reached": "3/3", "median": 4,
                                                    "mean": 4, "ci95": [4, 4]}
    assert report["first_words"]["reviews_to"]["0.5"] == {"reached": "0/3", "median": None}


def test_a_target_never_reached_is_reported_as_such() -> None:
    runs = {"yake": [series((0, 1), (5, 2)), series((0, 1), (5, 4))]}
    row = compare(runs, to_find=4, budgets=(1.0,), targets=(0.5,))["yake"]
    assert row["reviews_to"]["0.5"] == {"reached": "1/2", "median": 5}


def test_the_market_holds_only_the_held_out_side_and_the_training_side_is_known() -> None:
    items = generate_marketplace(n_benign=200, n_clusters=6, seed=3)
    market, known = replay_market(items, harmful_rate=0.2)
    split = split_seeds(items, seed=0)
    assert {i.id for i in known} == {i.id for i in split.train}
    harmful = {i.id for i in market if i.harmful}
    assert harmful and harmful <= {i.id for i in split.eval}
    assert sum(not i.harmful for i in market) == 200
    seeds = initial_seeds(market, 0.1, replay=1)
    assert len(seeds) >= 2 and all(s.harmful for s in seeds)
    assert seeds == initial_seeds(market, 0.1, replay=1) != initial_seeds(market, 0.1, replay=2)


def test_run_curves_writes_the_report(tmp_path) -> None:
    items = generate_marketplace(n_benign=300, n_clusters=5, seed=2)
    report = run_curves({"small": items}, ["first_words", "contrast"], tmp_path, replays=2,
                        progress=lambda _: None)
    saved = json.loads((tmp_path / "curves.json").read_text())
    assert saved["sets"]["small"]["methods"].keys() == {"first_words", "contrast"}
    assert saved["meta"]["versions"]["python"]
    assert report["small"]["model_versions"]["contrast"].startswith("keywords-contrast")
    assert "| contrast |" in (tmp_path / "curves.md").read_text()
    assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_initial_seeds_keep_at_least_two_and_at_most_all(fraction: float) -> None:
    market = [LabelledItem(f"h{i}", "x", harmful=True) for i in range(5)]
    assert 2 <= len(initial_seeds(market, fraction, replay=0)) <= 5


def test_a_blend_spec_names_one_replay_of_the_model_with_its_priors() -> None:
    import typer

    from qexplorer.cli.common import blend_spec
    from qexplorer.simulation.curves import extractors

    assert blend_spec("probe=64") == {"probe": 64.0}
    assert blend_spec("probe=64, contrast=2") == {"contrast": 2.0, "probe": 64.0}
    for bad in ("probe", "probe=x", "popularity=1", "probe=-1"):
        with pytest.raises(typer.BadParameter, match="--blend"):
            blend_spec(bad)
    # factories only: no model is loaded until a replay asks for one
    found = extractors(["first_words"], "some/model",
                       [{"probe": 64.0}, {"contrast": 2.0, "probe": 64.0}])
    assert list(found) == ["first_words", "model", "model+probe", "model+contrast+probe"]


def test_two_blends_of_the_same_priors_are_refused() -> None:
    from typer.testing import CliRunner

    from qexplorer.cli.main import app

    result = CliRunner().invoke(app, ["curves", "--blend", "probe=32", "--blend", "probe=64",
                                      "--corpus", "synthetic"])
    said = " ".join(result.output.replace("│", " ").split())  # however the panel wraps
    assert result.exit_code == 2 and "one replay a set of priors" in said

