"""The evaluation metrics on a hand-made corpus whose right answers are known."""

from __future__ import annotations

import json

import pytest

from marketplace.items import LabelledItem
from trainer.evaluate import evaluate_corpus, markdown_table, plot
from trainer.scoring import Searcher, bootstrap_ci, score_seed, summarise

# three siblings share "frostyplug"; benign listings share "delivery" with the seed
ITEMS = [
    LabelledItem("seed", "snow frostyplug", "fast delivery", harmful=True, cluster="c"),
    LabelledItem("t1", "white frostyplug", "", harmful=True, cluster="c"),
    LabelledItem("t2", "flake frostyplug", "", harmful=True, cluster="c"),
    LabelledItem("t3", "powder frostyplug", "", harmful=True, cluster="c"),
    LabelledItem("x1", "pills", "", harmful=True, cluster="other"),
    *[LabelledItem(f"b{n}", f"sofa number{n}", "fast delivery", harmful=False) for n in range(12)],
]


@pytest.fixture(scope="module")
def searcher():
    return Searcher(ITEMS)


def test_precision_is_the_harmful_share_of_the_top_ten_without_the_seed(searcher):
    assert searcher.precision("frostyplug", "seed") == 1.0
    assert searcher.precision("delivery", "seed") == 0.0
    assert searcher.precision("no-such-word", "seed") == 0.0
    assert "seed" not in searcher.ids("frostyplug", "seed")


def test_seed_metrics(searcher):
    sibs = frozenset({"t1", "t2", "t3"})
    good = score_seed(searcher, "seed", ["frostyplug"], k=2, siblings=sibs)
    assert good.precision_at_10 == 1.0 and good.hits_at_10 == 3
    assert good.recall_at_100 == 1.0 and good.valid_query_rate == 0.5
    mixed = score_seed(searcher, "seed", ["frostyplug", "delivery"], k=2, siblings=sibs)
    assert mixed.precision_at_10 == 0.5 and mixed.hits_at_10 == 1.5
    assert mixed.recall_at_100 == 1.0 and mixed.valid_query_rate == 1.0
    nothing = score_seed(searcher, "seed", ["", "  "], k=2, siblings=sibs)
    assert (nothing.precision_at_10, nothing.recall_at_100, nothing.valid_query_rate) == (0, 0, 0)
    assert score_seed(searcher, "x1", ["pills"], 1, frozenset()).recall_at_100 is None


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible():
    values = [0.0, 1.0] * 50
    low, high = bootstrap_ci(values, seed=3)
    assert low < 0.5 < high and (low, high) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci([0.7] * 10) == pytest.approx((0.7, 0.7))
    summary = summarise([score_seed(Searcher(ITEMS), "seed", ["frostyplug"], 1,
                                    frozenset({"t1"}))])
    assert summary["n_seeds"] == 1 and summary["precision_at_10"] == 1.0


def test_evaluate_corpus_scores_every_baseline_and_writes_a_report(tmp_path):
    found = evaluate_corpus("hand", ITEMS, {}, k=2, max_seeds=10, progress=lambda m: None)
    assert set(found["methods"]) == {"first_words", "tfidf", "yake"}
    for metrics in found["methods"].values():
        assert set(metrics) == {"precision_at_10", "hits_at_10", "recall_at_100",
                                "valid_query_rate", "n_seeds", "ci95"}
        assert 0 <= metrics["precision_at_10"] <= 1
    report = {"hand": found["methods"]}
    table = markdown_table(report)
    assert table.count("**") == 2 and "hand (" in table
    plot(report, tmp_path / "eval.png")
    assert (tmp_path / "eval.png").stat().st_size > 5_000
    json.dumps(found)
