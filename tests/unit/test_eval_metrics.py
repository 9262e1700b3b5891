"""The evaluation metrics on a hand-made corpus whose right answers are known."""

from __future__ import annotations

import json

import pytest

from agents.queries import seed_spans
from qexplorer.evaluation.evaluate import (
    ORACLE,
    baseline_extractors,
    evaluate_corpus,
    extract_all,
    gap_table,
    markdown_table,
    oracle_spans,
    plot,
)
from qexplorer.evaluation.scoring import (
    Searcher,
    best_span,
    bootstrap_ci,
    gap_closed,
    score_seed,
    summarise,
)
from qexplorer.marketplace.corpora import siblings
from qexplorer.marketplace.items import LabelledItem

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


def test_kin_precision_counts_only_the_seeds_own_cluster_and_finds_lists_them(searcher):
    # "frostyplug" finds the seed's three siblings; "pills" finds harmful, but not its kind
    assert searcher.kin_precision("frostyplug", "seed") == 1.0
    assert searcher.precision("pills", "seed") == 1.0
    assert searcher.kin_precision("pills", "seed") == 0.0
    assert searcher.kin_hits("frostyplug", "seed") == 3 and searcher.kin_hits("pills", "seed") == 0
    assert searcher.kin_precision("no-such-word", "seed") == 0.0
    found = searcher.finds(["pills", "frostyplug", "white"], "seed", 2)
    assert len(found) == 2 and set(found) <= {"t1", "t2", "t3"}
    assert searcher.finds(["pills"], "seed", 3) == []


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


def test_a_model_is_also_evaluated_writing_free_text_when_asked(monkeypatch):
    """``free_text`` adds ``<label>+free``: the same model, not restricted to the seed's
    spans (the generative mode), scored like every other method."""
    from agents.extractor.base import Extraction, Extractor
    from qexplorer.evaluation import evaluate as evaluation

    class Writes(Extractor):
        name = "stub"
        model_version = "stub-1"

        def __init__(self, extractive: bool) -> None:
            self.extractive = extractive

        async def extract(self, seeds, k):
            # free text may write what no seed holds; spans come from the seed
            return [Extraction(s.id, [s.title.split()[0]] if self.extractive
                               else ["written beyond the seed"], []) for s in seeds]

    modes = []
    monkeypatch.setattr(evaluation, "model_extractor",
                        lambda model, extractive=True: modes.append(extractive) or
                        Writes(extractive))
    found = evaluate_corpus("hand", ITEMS, {"m": "dir"}, k=2, max_seeds=10,
                            progress=lambda m: None, free_text=["m"])
    assert modes == [True, False]
    assert {"m", "m+free"} <= set(found["methods"])
    assert found["methods"]["m+free"]["precision_at_10"] == 0  # it found nothing
    assert found["methods"]["m+free"]["n_seeds"] == found["methods"]["m"]["n_seeds"]


def test_evaluate_corpus_scores_every_baseline_and_writes_a_report(tmp_path):
    found = evaluate_corpus("hand", ITEMS, {}, k=2, max_seeds=10, progress=lambda m: None)
    assert set(found["methods"]) == {"first_words", "tfidf", "yake", "contrast", "probe", ORACLE}
    for metrics in found["methods"].values():
        assert set(metrics) == {"precision_at_10", "hits_at_10", "recall_at_100",
                                "valid_query_rate", "n_seeds", "ci95", "first_precision_at_10",
                                "first_ci95"}
        assert 0 <= metrics["precision_at_10"] <= 1
    # the oracle gives one query: its first is all of it
    oracle = found["methods"][ORACLE]
    assert oracle["first_precision_at_10"] == oracle["precision_at_10"]
    report = {"hand": found["methods"]}
    table = markdown_table(report)
    assert table.count("**") == 4 and "hand (" in table  # all queries, then the first alone
    plot(report, tmp_path / "eval.png")
    assert (tmp_path / "eval.png").stat().st_size > 5_000
    json.dumps(found)


# spans of "alpha beta": "alpha" finds two siblings, "beta" one, "alpha beta" (terms OR-ed) all
# three, each without a benign listing; "gamma" finds only benign ones. "common" finds more
# harmful listings (4 of 10) than "rare" (1 of 1), at a lower precision.
SPAN_ITEMS = [
    LabelledItem("v", "common rare", "", harmful=True, cluster="v"),
    LabelledItem("v1", "rare thing", "", harmful=True, cluster="v"),
    *[LabelledItem(f"o{n}", f"common stuff{n}", "", harmful=True, cluster="o") for n in range(4)],
    *[LabelledItem(f"c{n}", f"common table{n}", "", harmful=False) for n in range(6)],
    LabelledItem("s", "alpha beta", "gamma", harmful=True, cluster="a"),
    LabelledItem("a1", "alpha one", "", harmful=True, cluster="a"),
    LabelledItem("a2", "alpha two", "", harmful=True, cluster="a"),
    LabelledItem("b1", "beta three", "", harmful=True, cluster="a"),
    LabelledItem("z", "zeta yy", "", harmful=True, cluster="z"),
    LabelledItem("z1", "zeta yy more", "", harmful=True, cluster="z"),
    LabelledItem("w", "wolf bear", "", harmful=True, cluster="w"),
    LabelledItem("w1", "wolf bear too", "", harmful=True, cluster="w"),
    *[LabelledItem(f"g{n}", f"gamma chair{n}", "", harmful=False) for n in range(8)],
]


def test_the_oracle_takes_the_span_with_the_best_precision(searcher):
    spans = seed_spans("snow frostyplug", "fast delivery", 3, 200, 0)
    best = best_span(searcher, "seed", "snow frostyplug", "fast delivery")
    assert best == "frostyplug"
    assert searcher.precision(best, "seed") == max(searcher.precision(q, "seed") for q in spans)
    assert any(searcher.precision(q, "seed") < 1.0 for q in spans)  # a real choice
    assert best_span(searcher, "seed", "", None) is None


def test_oracle_ties_go_to_more_hits_then_the_shorter_then_the_alphabetically_first():
    found = Searcher(SPAN_ITEMS)
    for query in ("alpha", "beta", "alpha beta"):
        assert found.precision(query, "s") == 1.0
    assert found.precision("gamma", "s") == 0.0
    assert best_span(found, "s", "alpha beta", "gamma") == "alpha beta"  # 3 hits beat 2 and 1
    assert (found.precision("rare", "v"), found.hits("rare", "v")) == (1.0, 1)
    assert (found.precision("common", "v"), found.hits("common", "v")) == (0.4, 4)
    assert best_span(found, "v", "common rare", "") == "rare"  # precision before hits
    assert best_span(found, "z", "zeta yy", "") == "yy"  # shorter than "zeta", "zeta yy"
    assert best_span(found, "w", "wolf bear", "") == "bear"  # as short as "wolf", first


@pytest.mark.parametrize("items", [ITEMS, SPAN_ITEMS], ids=["frostyplug", "spans"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_the_oracle_is_at_least_every_baseline_on_every_seed(items, k):
    found = Searcher(items)
    seeds = [i for i in items if i.harmful]
    sibs = siblings(items)
    spans = oracle_spans(found, seeds)
    for seed in seeds:
        oracle = score_seed(found, seed.id, [spans[seed.id]], 1, sibs[seed.id])
        assert oracle.valid_query_rate == 1.0
        for method, extractor in baseline_extractors(found).items():
            queries = extract_all(extractor, [seed], k)[seed.id]
            baseline = score_seed(found, seed.id, queries, k, sibs[seed.id])
            assert oracle.precision_at_10 >= baseline.precision_at_10, (seed.id, method, queries)
        for query in seed_spans(seed.title, seed.description, 3, 200, 0):
            assert oracle.precision_at_10 >= found.precision(query, seed.id)


def test_the_report_has_the_oracle_and_its_spans_on_the_same_seeds():
    found = evaluate_corpus("spans", SPAN_ITEMS, {}, k=4, max_seeds=10, progress=lambda m: None)
    oracle = found["methods"][ORACLE]
    assert oracle["valid_query_rate"] == 1.0
    assert oracle["n_seeds"] == found["methods"]["yake"]["n_seeds"]
    assert set(found["meta"]["oracle_spans"]) == set(found["meta"]["eval_seeds"])
    assert all(oracle["precision_at_10"] >= found["methods"][m]["precision_at_10"]
               for m in ("first_words", "tfidf", "yake"))


def test_gap_closed_arithmetic():
    assert gap_closed(0.74, 0.62, 0.82) == pytest.approx(0.6)
    assert gap_closed(0.62, 0.62, 0.82) == 0.0
    assert gap_closed(0.82, 0.62, 0.82) == pytest.approx(1.0)
    assert gap_closed(0.52, 0.62, 0.82) == pytest.approx(-0.5)  # below the heuristic
    assert gap_closed(0.9, 0.9, 0.9) is None  # no gap to close
    assert gap_closed(0.95, 0.97, 0.96) is None  # oracle below the heuristic


def _row(**precisions: float) -> dict:
    return {m: {"precision_at_10": p, "hits_at_10": 0.0, "recall_at_100": 0.0,
                "valid_query_rate": 1.0, "n_seeds": 10, "ci95": [p - 0.05, p + 0.05]}
            for m, p in precisions.items()}


def test_the_gap_table_and_the_oracle_never_bold(tmp_path):
    report = {
        "open": _row(first_words=0.6, tfidf=0.5, yake=0.7, sft=0.75, sft_dpo=0.85, oracle=1.0),
        "closed": _row(first_words=0.9, tfidf=0.8, yake=0.7, sft=0.85, sft_dpo=0.95, oracle=0.9),
        "no_models": _row(first_words=0.4, tfidf=0.5, yake=0.3, oracle=0.9),
    }
    gaps = gap_table(report)
    assert "| corpus | best heuristic | oracle | sft | gap closed by sft | sft_dpo | " \
           "gap closed by sft_dpo |" in gaps
    assert "| open | yake 0.700 | 1.000 | 0.750 | 17% | 0.850 | 50% |" in gaps
    assert "| closed | first_words 0.900 | 0.900 | 0.850 | - | 0.950 | - |" in gaps
    assert "| no_models | tfidf 0.500 | 0.900 | - | - | - | - |" in gaps
    assert "(oracle - best heuristic)" in gaps
    table = markdown_table(report)
    assert gaps in table
    assert table.count("**") == 6  # one bold cell a corpus, never the oracle's
    assert "first query alone" not in table  # rows without it: no such table
    assert "**1.000" not in table and "**0.850 (0.80-0.90)**" in table
    assert "**0.500 (0.45-0.55)**" in table
    plot(report, tmp_path / "eval.png")
    assert (tmp_path / "eval.png").stat().st_size > 5_000


def test_at_one_query_a_seed_a_heuristic_giving_fewer_queries_is_not_favoured():
    # first words gives one query (0.95); the model gives four (mean 0.8) of which the
    # first finds only harmful listings
    row = _row(first_words=0.95, tfidf=0.5, yake=0.6, sft_dpo=0.8, oracle=1.0)
    for method, first in (("first_words", 0.95), ("tfidf", 0.6), ("yake", 0.7),
                          ("sft_dpo", 1.0), ("oracle", 1.0)):
        row[method] |= {"first_precision_at_10": first, "first_ci95": [first - .05, first]}
    report = {"dm": row}
    assert "| dm | first_words 0.950 | 1.000 | 0.800 | -300% |" in gap_table(report)
    first = gap_table(report, "first_precision_at_10")
    assert "| dm | first_words 0.950 | 1.000 | 1.000 | 100% |" in first
    assert "first query alone" in first
    table = markdown_table(report)
    assert first in table and "**1.000 (0.95-1.00)**" in table

