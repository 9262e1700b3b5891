"""The blend of a real (tiny) model's span ranking with run-time priors (the contrast, the
probe, both), and the choice of its weights on the other corpora."""

from __future__ import annotations

from qexplorer.evaluation.blending import blended_results, grid_scores, leave_one_out
from qexplorer.evaluation.evaluate import extract_all, model_extractor
from qexplorer.evaluation.scoring import Searcher, SeedScore, score_seed
from qexplorer.marketplace.corpora import sample_seeds, siblings, split_seeds
from qexplorer.marketplace.synthetic import generate_marketplace
from trainer.bootstrap import BootstrapConfig, bootstrap


def _scores(*precisions: float) -> list[SeedScore]:
    return [SeedScore(p, 0.0, None, 1.0) for p in precisions]


def test_each_corpus_gets_the_weight_best_on_the_others() -> None:
    by_corpus = {"a": {(0.0,): _scores(0.9), (1.0,): _scores(0.1)},
                 "b": {(0.0,): _scores(0.2), (1.0,): _scores(0.6)},
                 "c": {(0.0,): _scores(0.2), (1.0,): _scores(0.6)}}
    # a alone prefers 0, but b and c (its "others") prefer 1; b's others: a 0.9/0.1, c 0.2/0.6
    assert leave_one_out(by_corpus) == {"a": (1.0,), "b": (0.0,), "c": (0.0,)}
    assert leave_one_out({"solo": {(0.0,): _scores(0.3), (2.0,): _scores(0.3)}}) \
        == {"solo": (0.0,)}
    # two priors: ties go to the smaller sum of weights
    pair = {(0.0, 4.0): _scores(0.5), (1.0, 0.0): _scores(0.5), (1.0, 4.0): _scores(0.4)}
    assert leave_one_out({"x": pair, "y": pair}) == {"x": (1.0, 0.0), "y": (1.0, 0.0)}


def test_weight_zero_is_the_model_alone_and_the_grid_is_scored_per_weight(tmp_path) -> None:
    items = generate_marketplace(n_benign=200, n_clusters=4, seed=4)
    model = str(bootstrap(items, tmp_path / "base", BootstrapConfig(
        vocab_size=512, hidden_size=64, heads=2, layers=2, intermediate_size=128, steps=10,
        batch_size=8, max_length=160), k=4))
    weights = {"contrast": (0.0, 50.0), "probe": (0.0, 500.0)}
    found = grid_scores(items, model_extractor(model), k=4, max_seeds=12, weights=weights)
    seeds = sample_seeds(split_seeds(items, seed=0).eval, 12, 0)
    queries = extract_all(model_extractor(model), seeds, 4)
    searcher, sibs = Searcher(items), siblings(items)
    alone = [score_seed(searcher, s.id, queries.get(s.id, []), 4, sibs[s.id]) for s in seeds]
    for label, weight in (("contrast", 50.0), ("probe", 500.0)):
        scored = found[label]
        assert scored[(0.0,)] == alone
        assert len(scored[(weight,)]) == len(seeds) and scored[(weight,)] != scored[(0.0,)]
    both = found["contrast+probe"]
    assert set(both) == {(0.0, 0.0), (0.0, 500.0), (50.0, 0.0), (50.0, 500.0)}
    assert both[(0.0, 0.0)] == alone
    # one prior at 0 is that prior's blend alone, the same ranking from the same values
    assert both[(50.0, 0.0)] == found["contrast"][(50.0,)]
    assert both[(0.0, 500.0)] == found["probe"][(500.0,)]

    report = blended_results({"x": items, "y": items}, model_extractor(model), k=4, max_seeds=12,
                             weights=weights, progress=lambda _: None)
    for label, weight in (("contrast", 50.0), ("probe", 500.0)):
        row = report[label]["corpora"]["x"]
        assert row["weights"][label] in (0.0, weight)
        assert set(row["grid_precision"]) == {f"{label}=0", f"{label}={weight:g}"}
        assert report[label]["weights"][label] in (0.0, weight)
        assert row["n_seeds"] == len(seeds)
    row = report["contrast+probe"]["corpora"]["y"]
    assert set(row["weights"]) == {"contrast", "probe"} and len(row["grid_precision"]) == 4
