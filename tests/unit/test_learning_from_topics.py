"""Learning from the system's own topics, without a broker: the labels in force, feedback scored
by them (unreviewed never a miss), the time split, and the promotion gate's test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.extractor.base import SeedText
from agents.extractor.keywords import KeywordsExtractor
from agents.extractor.priors import TermCounts
from agents.prompt import parse_completion
from qexplorer.evaluation.scoring import Searcher
from qexplorer.marketplace.items import LabelledItem
from schemas.models import (
    ModerationDecision,
    SearchFeedback,
    SearchHit,
    ToxicItem,
    decisions_in_force,
)
from tests.agents.test_explorer import StubExtractor
from trainer.dataset import BuildConfig, feedback_rows
from trainer.feedback import (
    Labels,
    TopicsSnapshot,
    feedback_candidates,
    labels_of,
    rows_from_topics,
    split_by_time,
)
from trainer.gate import EvalSet, corpus_set, decide, judge, paired, seed_score

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _decision(n: int, listing: str, kind: str, supersedes: str | None = None,
              reviewer: str = "alice") -> ModerationDecision:
    return ModerationDecision(decision_id=f"d{n:07d}", listing_id=listing, decision=kind,
                              text_hash="h", reviewer=reviewer, supersedes=supersedes,
                              decided_at=T0 + timedelta(minutes=n))


def _toxic(item_id: str, minutes: int = 0, title: str = "c0ke premium") -> ToxicItem:
    return ToxicItem(id=item_id, title=title, description="tg frostyplug", confirmed_by="mod",
                     confirmed_at=T0 + timedelta(minutes=minutes))


def _feedback(seed: str, query: str, results: list[str], version: str = "m1"
              ) -> SearchFeedback:
    return SearchFeedback(seed_id=seed, query=query, query_index=0, extractor="e",
                          model_version=version, prompt_version="p",
                          results=[SearchHit(listing_id=r, rank=n + 1, score=1.0)
                                   for n, r in enumerate(results)])


# --- the labels in force ----------------------------------------------------------------------


def test_a_later_decision_supersedes_and_undo_withdraws_only_the_decision_it_names():
    decisions = [
        _decision(1, "a", "confirm"), _decision(2, "a", "reject"),  # a: reject in force
        _decision(3, "b", "confirm"), _decision(4, "b", "undo", supersedes="d0000003"),  # none
        _decision(5, "c", "reject"), _decision(6, "c", "confirm"),
        _decision(7, "c", "undo", supersedes="d0000005"),  # names an older one: no effect
        _decision(8, "d", "unsure"),
        _decision(1, "a", "confirm"),  # read twice: counts once, the reject stays in force
    ]
    in_force = decisions_in_force(decisions)
    assert {k: v.decision for k, v in in_force.items()} == {"a": "reject", "c": "confirm",
                                                            "d": "unsure"}


def test_toxic_items_and_confirms_are_positive_rejects_negative_the_rest_unknown():
    labels = labels_of([_toxic("t1"), _toxic("a")],
                       [_decision(1, "a", "reject"), _decision(2, "b", "confirm"),
                        _decision(3, "c", "reject"), _decision(4, "d", "unsure")])
    assert labels.positive == {"t1", "a", "b"} and labels.negative == {"c"}
    assert [labels.of(x) for x in ("a", "b", "c", "d", "never-seen")] == \
        [True, True, False, None, None]


# --- feedback scored by the labels -------------------------------------------------------------


def test_unreviewed_results_are_unknown_never_misses():
    labels = Labels(frozenset({"p1", "p2", "s1"}), frozenset({"n1"}))
    records = [
        _feedback("s1", "c0ke", ["s1", "p1", "p2", "u1", "u2", "u3"]),  # 2 of 2 labelled
        _feedback("s1", "premium", ["p1", "n1", "u4"]),  # 1 of 2
        _feedback("s1", "delivery", ["u5", "u6"]),  # nothing labelled: no evidence
        _feedback("s1", "nothing", []),
        _feedback("s1", "premium", ["p1", "p2", "n1"], version="m2"),  # better evidenced
    ]
    found = {c.query: (c.score, c.hits) for c in feedback_candidates(records, labels)["s1"]}
    assert found == {"c0ke": (1.0, 2), "premium": (pytest.approx(2 / 3), 2)}
    sft, dpo = feedback_rows("kafka", {"s1": SeedText("s1", "c0ke premium", "")},
                             feedback_candidates(records, labels),
                             BuildConfig(k=1, threshold=0.5, margin=0.25))
    # counting unknown results as misses would have scored "c0ke" 2/5 and dropped it
    assert parse_completion(sft[0]["completion"]) == ["c0ke"]
    assert [(parse_completion(d["chosen"]), parse_completion(d["rejected"])) for d in dpo] == \
        [(["c0ke"], ["premium"])]


def test_the_newest_reviewed_seeds_are_held_back_and_ties_at_the_cutoff_train():
    seeds = {f"s{n}": _toxic(f"s{n}", minutes) for n, minutes in
             enumerate([0, 1, 2, 3, 3, 4, 5, 6, 7, 8])}
    split = split_by_time(seeds, [*seeds, "not-a-seed"], holdout=0.2)
    assert split.holdout == ("s8", "s9") and split.cutoff == T0 + timedelta(minutes=6)
    assert set(split.train) == {f"s{n}" for n in range(8)}
    tied = split_by_time(seeds, ["s0", "s3", "s4"], holdout=0.3)  # s3 and s4 share a minute
    assert tied.holdout == () and set(tied.train) == {"s0", "s3", "s4"}
    assert split_by_time(seeds, ["s0"], holdout=0.5).holdout == ()
    assert split_by_time(seeds, list(seeds), holdout=0).holdout == ()
    with pytest.raises(ValueError):
        split_by_time(seeds, list(seeds), holdout=1.0)


def test_held_back_seeds_never_reach_the_training_rows():
    toxic = [_toxic(f"s{n}", n, title=f"c0ke{n} premium") for n in range(10)]
    toxic += [_toxic(f"p{n}", 100) for n in range(3)]
    feedback = [_feedback(f"s{n}", f"c0ke{n}", ["p0", "p1", "p2"]) for n in range(10)]
    snapshot = TopicsSnapshot(feedback, toxic, [], 0)
    sft, _, split, _ = rows_from_topics(snapshot, BuildConfig(k=1), holdout=0.3)
    assert split.holdout == ("s7", "s8", "s9")
    assert {r["seed_id"] for r in sft} == {f"s{n}" for n in range(7)}


# --- the gate ----------------------------------------------------------------------------------


def _corpus() -> list[LabelledItem]:
    toxic = [LabelledItem(f"t{n}", f"frostyplug snow {n}", harmful=True, cluster="c")
             for n in range(6)]
    benign = [LabelledItem(f"b{n}", f"winter snow boots {n}") for n in range(30)]
    return toxic + benign


def test_a_seed_scores_only_on_labelled_results():
    searcher = Searcher(_corpus())
    partial = {"t1": True, "b0": False}.get
    assert seed_score(searcher, "t0", ["frostyplug"], partial) == 1.0  # t1 labelled, others not
    assert seed_score(searcher, "t0", ["boots"], lambda _: None) is None
    assert seed_score(searcher, "t0", ["zzzz-nowhere", "frostyplug"], partial) == 0.5
    assert seed_score(searcher, "t0", ["", "   "], partial) is None


def test_the_decision_needs_enough_pairs_and_an_interval_above_zero():
    def set_of(diffs, name="s"):
        return paired(name, {str(i): d for i, d in enumerate(diffs)},
                      {str(i): 0.0 for i in range(len(diffs))})

    better, diffs = set_of([0.2, 0.3, 0.1, 0.25] * 6)
    assert decide([better], diffs)[0] == "promoted"
    assert decide([better], diffs[:10])[0] == "refused"  # too few to tell
    noisy, noise = set_of([0.5, -0.5, 0.4, -0.45] * 6)
    assert decide([noisy], noise)[0] == "refused"
    worse, bad = set_of([-0.2] * 12, "small")
    decision, reason, _ = decide([better, worse], diffs * 3 + bad)
    assert decision == "refused" and "small" in reason
    pairs, _ = paired("x", {"a": 0.5, "b": None, "c": 0.1}, {"a": 0.25, "b": 0.3, "c": None})
    assert (pairs.seeds, pairs.skipped, pairs.difference) == (1, 2, 0.25)


def test_judge_promotes_a_better_candidate_and_refuses_a_worse_one():
    items = [LabelledItem(f"t{c}-{n}", f"code{c} gear {n} fresh", harmful=True, cluster=f"c{c}")
             for c in range(30) for n in range(4)]
    items += [LabelledItem(f"b{n}", f"gear fresh {n} {n % 7} boots") for n in range(300)]
    evalset = corpus_set("toy", items, max_seeds=60)
    assert len(evalset.seeds) >= 20
    good = StubExtractor({s.id: [s.title.split()[0]] for s in evalset.seeds}, version="good")
    bad = StubExtractor({s.id: ["fresh boots"] for s in evalset.seeds}, version="bad")
    kept = judge(lambda _: good, lambda _: bad, [evalset], k=1, candidate_model="/g",
                 incumbent_extractor="stub", progress=lambda _: None)
    assert kept.decision == "promoted" and kept.candidate_version == "good"
    assert kept.sets[0].candidate > kept.sets[0].incumbent and kept.ci95[0] > 0
    refused = judge(lambda _: bad, lambda _: good, [evalset], k=1, candidate_model="/b",
                    incumbent_extractor="stub", progress=lambda _: None)
    assert refused.decision == "refused" and refused.ci95[1] < 0
    # an incumbent that reads the set's statistics (contrast: the index and the known toxic
    # items of the training side) is built per set and judged the same way
    against = judge(lambda _: good, lambda s: KeywordsExtractor("contrast", stats=s.stats),
                    [evalset], k=1, candidate_model="/g", incumbent_extractor="keywords",
                    progress=lambda _: None)
    assert against.incumbent_version == "keywords-contrast-2"
    assert against.sets[0].incumbent > 0.9  # it finds the code words too: no better
    assert against.decision == "refused"


def test_an_evaluation_set_with_no_labels_gives_no_pairs():
    searcher = Searcher(_corpus())
    evalset = EvalSet("topics", searcher, [SeedText("t0", "frostyplug snow", "")],
                      lambda _: None, TermCounts())
    stub = StubExtractor({"t0": ["frostyplug"]})
    found = judge(lambda _: stub, lambda _: stub, [evalset], k=1, candidate_model="/m",
                  incumbent_extractor="stub", progress=lambda _: None)
    assert found.seeds == 0 and found.sets[0].skipped == 1 and found.decision == "refused"
