"""The trained model and what the system knows at run time, in one ranking: the weights chosen
by measurement, never on the set they are reported on.

A model backend may rank a seed's spans by log-probability plus a weight times each span's
prior: its toxic-versus-all contrast, its probe, or both (``agents.extractor.decoding.blend``;
``QEXPLORER_BLEND``). Which weights? The model's span scores and each prior's span values are
computed once per evaluation seed; every point of each blend's grid (:data:`BLENDS`: each
prior alone over its :data:`WEIGHTS`, and both over every pair; all zeros: the model alone)
ranks them and is scored with the evaluation's metrics; the point reported for a corpus is the
best on the *other* corpora (mean precision@10 over them), so no reported number chose its own
weights. The weights to deploy are the best over all of them.

The training side of the cluster split is the confirmed set the priors know, as for the
``contrast`` and ``probe`` baselines (``qexplorer.evaluation.evaluate``); the model never saw the
evaluation seeds either.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from agents.extractor.base import SeedText
from agents.extractor.decoding import blend_values, ranked
from agents.extractor.priors import PRIORS
from qexplorer.evaluation.scoring import Searcher, SeedScore, mean, score_seed, summarise
from qexplorer.marketplace.corpora import sample_seeds, siblings, split_seeds
from qexplorer.marketplace.items import LabelledItem

if TYPE_CHECKING:
    from agents.extractor.transformers_backend import TransformersExtractor

#: Weights tried per prior (a log-probability is a sum over a span's tokens; a contrast is a
#: log-ratio; a probe a share of ten results, so its weights are larger).
WEIGHTS: dict[str, tuple[float, ...]] = {
    "contrast": (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    "probe": (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
}

#: The blends scored, by the label a report gives them: the priors each adds to the model.
BLENDS: dict[str, tuple[str, ...]] = {
    "contrast": ("contrast",), "probe": ("probe",), "contrast+probe": ("contrast", "probe")}

#: A grid point: the weights of a blend's priors, in its order.
Point = tuple[float, ...]


def grid(priors: Sequence[str], weights: Mapping[str, Sequence[float]] = WEIGHTS) -> list[Point]:
    """Every point of a blend: each combination of its priors' weights."""
    return list(itertools.product(*(weights[prior] for prior in priors)))


def point_name(priors: Sequence[str], point: Point) -> str:
    """A grid point as reports key it: ``contrast=2,probe=64``."""
    return ",".join(f"{prior}={weight:g}" for prior, weight in zip(priors, point, strict=True))


def grid_scores(items: Sequence[LabelledItem], extractor: TransformersExtractor, *, k: int = 4,
                max_seeds: int = 300, split_seed: int = 0,
                blends: Mapping[str, Sequence[str]] = BLENDS,
                weights: Mapping[str, Sequence[float]] = WEIGHTS
                ) -> dict[str, dict[Point, list[SeedScore]]]:
    """Blend -> grid point -> the evaluation seeds' scores with that blend of the model's span
    scores (``extractor``, the model alone: computed once a seed), on one corpus."""
    searcher = Searcher(items)
    split = split_seeds(items, seed=split_seed)
    seeds = sample_seeds(split.eval, max_seeds, split_seed)
    sibs = siblings(items)
    stats = searcher.with_confirmed(split.train)
    points = {label: grid(priors, weights) for label, priors in blends.items()}
    used = {prior for priors in blends.values() for prior in priors}
    out: dict[str, dict[Point, list[SeedScore]]] = {
        label: {point: [] for point in grid_points} for label, grid_points in points.items()}
    for seed in seeds:
        text = SeedText(seed.id, seed.title, seed.description)
        spans, scores = extractor.span_scores_sync(text, k)
        values = {prior: PRIORS[prior](text, spans, stats) for prior in used} if spans else {}
        for label, priors in blends.items():
            for point in points[label]:
                queries = ranked(text, spans, blend_values(
                    scores, values, dict(zip(priors, point, strict=True))), k,
                    temperature=0.0, sample_seed=None).queries if spans else []
                out[label][point].append(score_seed(searcher, seed.id, queries, k,
                                                    sibs[seed.id]))
    return out


def leave_one_out(by_corpus: Mapping[str, Mapping[Point, Sequence[SeedScore]]]
                  ) -> dict[str, Point]:
    """Corpus -> the grid point with the best mean precision@10 over the other corpora (ties:
    the smaller weights); with one corpus, its own best (the report says so)."""
    precision = {name: _precision(scored) for name, scored in by_corpus.items()}
    chosen = {}
    for name in by_corpus:
        others = [n for n in by_corpus if n != name] or [name]
        chosen[name] = _best(sorted(precision[name]), [precision[o] for o in others])
    return chosen


def _precision(scored: Mapping[Point, Sequence[SeedScore]]) -> dict[Point, float]:
    """Grid point -> mean precision@10 of its seeds."""
    return {point: mean(s.precision_at_10 for s in scores) for point, scores in scored.items()}


def _best(points: Sequence[Point], precisions: Sequence[Mapping[Point, float]]) -> Point:
    return max(points, key=lambda p: (mean(pr[p] for pr in precisions), -sum(p)))


def blended_results(corpora: Mapping[str, Sequence[LabelledItem]],
                    extractor: TransformersExtractor, *, k: int = 4, max_seeds: int = 300,
                    split_seed: int = 0, blends: Mapping[str, Sequence[str]] = BLENDS,
                    weights: Mapping[str, Sequence[float]] = WEIGHTS,
                    progress: Callable[[str], None] = print) -> dict[str, dict]:
    """Per blend and corpus, the blend's metrics at its leave-one-out weights, and the grid's
    precision (for the record); a blend's ``weights`` are the ones to deploy (best over every
    corpus; ``QEXPLORER_BLEND``)."""
    by_corpus = {}
    for name, items in corpora.items():
        by_corpus[name] = grid_scores(items, extractor, k=k, max_seeds=max_seeds,
                                      split_seed=split_seed, blends=blends, weights=weights)
        for label, scored in by_corpus[name].items():
            precision = _precision(scored)
            best = max(precision, key=precision.__getitem__)
            progress(f"{name:20s} {label} blend grid ({len(scored)} points): the model alone "
                     f"{precision[min(precision)]:.3f}, best "
                     f"{point_name(blends[label], best)} {precision[best]:.3f}")
    out = {}
    for label, priors in blends.items():
        scored = {name: by_corpus[name][label] for name in by_corpus}
        chosen = leave_one_out(scored)
        precision = {name: _precision(g) for name, g in scored.items()}
        overall = _best(grid(priors, weights), list(precision.values()))
        out[label] = {
            "priors": list(priors), "weights": dict(zip(priors, overall, strict=True)),
            "grid": {prior: list(weights[prior]) for prior in priors},
            "corpora": {name: {
                **summarise(scored[name][chosen[name]], seed=split_seed),
                "weights": dict(zip(priors, chosen[name], strict=True)),
                "grid_precision": {point_name(priors, p): round(v, 4)
                                   for p, v in precision[name].items()}}
                for name in scored}}
    return out
