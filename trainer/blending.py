"""The trained model and what the system knows at run time, in one ranking: the weight chosen
by measurement, never on the set it is reported on.

A model backend may rank a seed's spans by log-probability plus a weight times each span's
prior: its toxic-versus-all contrast or its probe (``agents.extractor.decoding.blend``;
``QEXPLORER_CONTRAST_WEIGHT``, ``QEXPLORER_BLEND_PRIOR``). Which weight? The model's span
scores are computed once per evaluation seed; every weight of each prior's grid
(:data:`GRIDS`; 0: the model alone) ranks them and is scored with the evaluation's metrics; the
weight reported for a corpus is the best on the *other* corpora (mean precision@10 over them),
so no reported number chose its own weight. The weight to deploy is the best over all of them.

The training side of the cluster split is the confirmed set the priors know, as for the
``contrast`` and ``probe`` baselines (``trainer.evaluate``); the model never saw the
evaluation seeds either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from agents.extractor.base import SeedText
from agents.extractor.decoding import blend, ranked
from agents.extractor.keywords import TermCounts, WithToxic
from marketplace.items import LabelledItem
from trainer.corpus import sample_seeds, siblings, split_seeds
from trainer.scoring import Searcher, SeedScore, mean, score_seed, summarise

if TYPE_CHECKING:
    from agents.extractor.transformers_backend import TransformersExtractor

#: Weights tried per prior (a log-probability is a sum over a span's tokens; a contrast is a
#: log-ratio; a probe a share of ten results, so its weights are larger).
GRIDS: dict[str, tuple[float, ...]] = {
    "contrast": (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    "probe": (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
}


def grid_scores(items: Sequence[LabelledItem], extractor: TransformersExtractor, *, k: int = 4,
                max_seeds: int = 300, split_seed: int = 0,
                grids: Mapping[str, Sequence[float]] = GRIDS
                ) -> dict[str, dict[float, list[SeedScore]]]:
    """Prior -> weight -> the evaluation seeds' scores with that blend of the model's span
    scores (``extractor``, the model alone: computed once a seed), on one corpus."""
    searcher = Searcher(items)
    split = split_seeds(items, seed=split_seed)
    seeds = sample_seeds(split.eval, max_seeds, split_seed)
    sibs = siblings(items)
    stats = WithToxic(searcher.index, TermCounts(SeedText(i.id, i.title, i.description)
                                                 for i in split.train),
                      search=searcher.top_ids)
    out: dict[str, dict[float, list[SeedScore]]] = {
        prior: {w: [] for w in grid} for prior, grid in grids.items()}
    for seed in seeds:
        text = SeedText(seed.id, seed.title, seed.description)
        spans, scores = extractor.span_scores_sync(text, k)
        for prior, grid in grids.items():
            for weight in grid:
                queries = ranked(text, spans, blend(text, spans, scores, stats, weight, prior),
                                 k, temperature=0.0, sample_seed=None).queries if spans else []
                out[prior][weight].append(score_seed(searcher, seed.id, queries, k,
                                                     sibs[seed.id]))
    return out


def leave_one_out(by_corpus: Mapping[str, Mapping[float, Sequence[SeedScore]]]
                  ) -> dict[str, float]:
    """Corpus -> the weight with the best mean precision@10 over the other corpora (ties: the
    smaller weight); with one corpus, its own best (the report says so)."""
    precision = {name: {w: mean(s.precision_at_10 for s in scores) for w, scores in grid.items()}
                 for name, grid in by_corpus.items()}
    chosen = {}
    for name in by_corpus:
        others = [n for n in by_corpus if n != name] or [name]
        weights = sorted(precision[name])
        chosen[name] = max(weights, key=lambda w: (mean(precision[o][w] for o in others), -w))
    return chosen


def blended_results(corpora: Mapping[str, Sequence[LabelledItem]],
                    extractor: TransformersExtractor, *, k: int = 4, max_seeds: int = 300,
                    split_seed: int = 0, grids: Mapping[str, Sequence[float]] = GRIDS,
                    progress: Callable[[str], None] = print) -> dict[str, dict]:
    """Per prior and corpus, the blend's metrics with its leave-one-out weight, and the grid's
    precision (for the record); a prior's ``weight`` is the one to deploy (best over every
    corpus)."""
    by_corpus = {}
    for name, items in corpora.items():
        by_corpus[name] = grid_scores(items, extractor, k=k, max_seeds=max_seeds,
                                      split_seed=split_seed, grids=grids)
        for prior, grid in by_corpus[name].items():
            progress(f"{name:20s} {prior} blend grid: " + ", ".join(
                f"{w:g}:{mean(s.precision_at_10 for s in v):.3f}" for w, v in grid.items()))
    out = {}
    for prior, grid in grids.items():
        scored = {name: by_corpus[name][prior] for name in by_corpus}
        chosen = leave_one_out(scored)
        overall = max(sorted(grid), key=lambda w: (mean(
            mean(s.precision_at_10 for s in scored[n][w]) for n in scored), -w))
        out[prior] = {"weight": overall, "grid": list(grid), "corpora": {
            name: {**summarise(scored[name][chosen[name]], seed=split_seed),
                   "weight": chosen[name],
                   "grid_precision": {str(w): round(mean(s.precision_at_10 for s in v), 4)
                                      for w, v in scored[name].items()}}
            for name in scored}}
    return out
