"""The blend of a real (tiny) model's span ranking with a run-time prior (the contrast, the
probe), and the choice of its weight on the other corpora."""

from __future__ import annotations

from marketplace.synthetic import generate_marketplace
from trainer.blending import blended_results, grid_scores, leave_one_out
from trainer.bootstrap import BootstrapConfig, bootstrap
from trainer.corpus import sample_seeds, siblings, split_seeds
from trainer.evaluate import extract_all, model_extractor
from trainer.scoring import Searcher, SeedScore, score_seed


def _scores(*precisions: float) -> list[SeedScore]:
    return [SeedScore(p, 0.0, None, 1.0) for p in precisions]


def test_each_corpus_gets_the_weight_best_on_the_others() -> None:
    by_corpus = {"a": {0.0: _scores(0.9), 1.0: _scores(0.1)},
                 "b": {0.0: _scores(0.2), 1.0: _scores(0.6)},
                 "c": {0.0: _scores(0.2), 1.0: _scores(0.6)}}
    # a alone prefers 0, but b and c (its "others") prefer 1; b's others: a 0.9/0.1, c 0.2/0.6
    assert leave_one_out(by_corpus) == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert leave_one_out({"solo": {0.0: _scores(0.3), 2.0: _scores(0.3)}}) == {"solo": 0.0}


def test_weight_zero_is_the_model_alone_and_the_grid_is_scored_per_weight(tmp_path) -> None:
    items = generate_marketplace(n_benign=200, n_clusters=4, seed=4)
    model = str(bootstrap(items, tmp_path / "base", BootstrapConfig(
        vocab_size=512, hidden_size=64, heads=2, layers=2, intermediate_size=128, steps=10,
        batch_size=8, max_length=160), k=4))
    grids = {"contrast": (0.0, 50.0), "probe": (0.0, 500.0)}
    found = grid_scores(items, model_extractor(model), k=4, max_seeds=12, grids=grids)
    seeds = sample_seeds(split_seeds(items, seed=0).eval, 12, 0)
    queries = extract_all(model_extractor(model), seeds, 4)
    searcher, sibs = Searcher(items), siblings(items)
    alone = [score_seed(searcher, s.id, queries.get(s.id, []), 4, sibs[s.id]) for s in seeds]
    for prior, weight in (("contrast", 50.0), ("probe", 500.0)):
        grid = found[prior]
        assert grid[0.0] == alone
        assert len(grid[weight]) == len(seeds) and grid[weight] != grid[0.0]

    report = blended_results({"x": items, "y": items}, model_extractor(model), k=4, max_seeds=12,
                             grids=grids, progress=lambda _: None)
    for prior, weight in (("contrast", 50.0), ("probe", 500.0)):
        row = report[prior]["corpora"]["x"]
        assert row["weight"] in (0.0, weight)
        assert set(row["grid_precision"]) == {"0.0", str(weight)}
        assert report[prior]["weight"] in (0.0, weight) and row["n_seeds"] == len(seeds)
