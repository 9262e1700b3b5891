"""Fitting the learned combination (``agents.extractor.combination``) from search feedback:
which of a seed's spans find toxic listings, by the labels.

Rows (:func:`corpus_rows`): for the training seeds of a labelled corpus (its side of the
cluster split, at most ``max_seeds``), every span the extractor ranks, with its features and
its precision@10 by the labels (the seed excluded). The priors must read the confirmed set as
a worker's do, which never holds the seed's own kind yet: the training side is cut in two by
cluster (:func:`halves`) and each half's seeds read the other half as the confirmed items.

Fit (:func:`fit_weights`): a pairwise logistic loss over each seed's spans (a better span
should score above a worse one, each pair weighted by how much better), L2-regularised, on
standardised features, by Newton's method in numpy (seven weights).

Choice (:func:`choose`): the fitted weights, the probe with its ties broken by them
(:func:`probe_first`: a linear model cannot rank lexicographically) and each part alone (the
model, the contrast, the probe) rank a held-back share of the seeds (by a hash of the seed
id); a fitted candidate is kept only when strictly better there than every part in
precision@10 over ``k`` queries, and is then fitted again on every row. Otherwise the best
part is the combination.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from agents.extractor.base import SeedText
from agents.extractor.combination import FEATURES, PARTS, Combination, span_features
from agents.extractor.decoding import spans_of
from agents.extractor.priors import WithToxic
from agents.queries import SPAN_LIMIT, rank_spans
from qexplorer.config.versions import library_versions
from qexplorer.evaluation.scoring import Searcher, mean
from qexplorer.marketplace.corpora import data_hash, sample_seeds, split_seeds
from qexplorer.marketplace.items import LabelledItem

if TYPE_CHECKING:
    from agents.extractor.transformers_backend import TransformersExtractor


#: The kind of combination that ranks by the probe, ties broken by the fitted weights.
PROBE_FIRST = "probe_first"


@dataclass(frozen=True)
class SeedRows:
    """One seed's spans, their features (:data:`FEATURES`) and precision@10 by the labels."""

    seed_id: str
    corpus: str
    spans: tuple[str, ...]
    features: tuple[tuple[float, ...], ...]
    targets: tuple[float, ...]


def halves(items: Sequence[LabelledItem]) -> tuple[list[LabelledItem], list[LabelledItem]]:
    """The items in two halves, no cluster in both (an item without one is its own), groups
    taken in a fixed hashed order, each to the smaller half."""
    groups: dict[str, list[LabelledItem]] = defaultdict(list)
    for item in items:
        groups[item.cluster if item.cluster is not None else f"item:{item.id}"].append(item)
    out: tuple[list[LabelledItem], list[LabelledItem]] = ([], [])
    for name in sorted(groups, key=lambda g: hashlib.sha256(g.encode()).hexdigest()):
        min(out, key=len).extend(groups[name])
    return out


def seed_rows(corpus: str, seed: LabelledItem, searcher: Searcher, stats: WithToxic,
              extractor: TransformersExtractor | None, k: int) -> SeedRows:
    """A seed's rows: the spans the extractor ranks (the same spans without one, scored 0 by
    the model), under ``stats`` (the index and the confirmed items the priors read)."""
    text = SeedText(seed.id, seed.title, seed.description)
    if extractor is not None:
        spans, scores = extractor.span_scores_sync(text, k)
    else:
        spans, scores = spans_of(text, SPAN_LIMIT), None
    features = span_features(text, spans, scores, stats)
    searcher.prefetch(spans, seed.id)
    return SeedRows(seed.id, corpus, tuple(spans), tuple(features),
                    tuple(searcher.precision(s, seed.id) for s in spans))


def corpus_rows(corpus: str, items: Sequence[LabelledItem],
                extractor: TransformersExtractor | None, *, k: int = 4, max_seeds: int = 100,
                split_seed: int = 0, searcher: Searcher | None = None) -> list[SeedRows]:
    """Rows of a corpus's training seeds (at most ``max_seeds``, half from each
    :func:`halves`, each half reading the other as the confirmed items)."""
    searcher = searcher or Searcher(items)
    first, second = halves(split_seeds(items, seed=split_seed).train)
    rows = []
    for mine, other in ((first, second), (second, first)):
        stats = searcher.with_confirmed(other)
        rows += [seed_rows(corpus, seed, searcher, stats, extractor, k)
                 for seed in sample_seeds(mine, max_seeds // 2, split_seed)]
    return [r for r in rows if r.spans]


def pairs(rows: Iterable[SeedRows], *, top: int = 20, per_span: int = 10, margin: float = 0.05,
          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The fit's pairs: for each seed, its ``top`` best spans (those finding any toxic
    listing) against up to ``per_span`` random spans worse by more than ``margin``; the
    feature differences and each pair's weight (the difference of precision)."""
    rng = random.Random(seed)
    diffs, weights = [], []
    for row in rows:
        order = sorted(range(len(row.spans)), key=lambda i: -row.targets[i])
        for i in order[:top]:
            if row.targets[i] <= 0:
                break
            worse = [j for j in order if row.targets[j] < row.targets[i] - margin]
            for j in rng.sample(worse, min(per_span, len(worse))):
                diffs.append(np.subtract(row.features[i], row.features[j]))
                weights.append(row.targets[i] - row.targets[j])
    if not diffs:
        return np.zeros((0, len(FEATURES))), np.zeros(0)
    return np.array(diffs, dtype=float), np.array(weights, dtype=float)


def fit_weights(rows: Sequence[SeedRows], *, l2: float = 1e-3, iterations: int = 25,
                seed: int = 0) -> tuple[float, ...]:
    """Weights of :data:`FEATURES` minimising the weighted pairwise logistic loss of
    :func:`pairs` plus ``l2`` times their squared norm (on features divided by their spread
    over the rows' spans; a feature that does not vary gets 0)."""
    diffs, weights = pairs(rows, seed=seed)
    if not len(diffs):
        return tuple(0.0 for _ in FEATURES)
    spread = np.array([row for r in rows for row in r.features], dtype=float).std(axis=0)
    used = spread > 1e-12
    x = diffs[:, used] / spread[used]
    w = weights / weights.sum()
    theta = np.zeros(x.shape[1])
    for _ in range(iterations):
        margin = x @ theta
        p = 1.0 / (1.0 + np.exp(np.clip(margin, -30, 30)))  # sigmoid(-margin)
        grad = -(x.T @ (w * p)) + 2 * l2 * theta
        hess = (x.T * (w * p * (1 - p))) @ x + 2 * l2 * np.eye(len(theta))
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    out = np.zeros(len(FEATURES))
    out[used] = theta / spread[used]
    return tuple(float(v) for v in out)


def precision(rows: Sequence[SeedRows], combination: Combination, k: int
              ) -> tuple[float, float]:
    """Mean precision@10 over the seeds of the ``k`` spans the combination ranks first (as
    ``agents.queries.rank_spans`` keeps them), and of the first alone."""
    every, first = [], []
    for row in rows:
        queries, _ = rank_spans(row.spans, combination.scores(row.features), k)
        target = dict(zip(row.spans, row.targets, strict=True))
        every.append(mean(target[q] for q in queries))
        first.append(target[queries[0]] if queries else 0.0)
    return mean(every), mean(first)


def held_back(seed_id: str, share: float) -> bool:
    """True for about ``share`` of seed ids, always the same ones (a hash of the id)."""
    return int(hashlib.sha256(seed_id.encode()).hexdigest()[:8], 16) < share * 0x100000000


def choose(rows: Sequence[SeedRows], *, k: int = 4, holdout: float = 0.3, seed: int = 0
           ) -> Combination:
    """The combination to use: the fitted weights when strictly better than every part on the
    held-back seeds, else the best part (see the module docstring); the record holds every
    candidate's figures there, the rows' corpora and counts."""
    val = [r for r in rows if held_back(r.seed_id, holdout)]
    fit = [r for r in rows if not held_back(r.seed_id, holdout)]
    if not val or not fit:
        raise ValueError(f"too few seeds to fit and check a combination ({len(rows)})")
    varying = {f for i, f in enumerate(FEATURES)
               if len({row[i] for r in rows for row in r.features}) > 1}
    learned = fit_weights(fit, seed=seed)
    candidates = {"learned": Combination(learned),
                  PROBE_FIRST: Combination(probe_first(learned, fit), PROBE_FIRST)}
    candidates |= {part: Combination.part(part) for part in PARTS if part in varying}
    figures = {name: precision(val, c, k) for name, c in candidates.items()}
    best = max(candidates, key=lambda name: (figures[name][0], name in PARTS))
    corpora: dict[str, int] = defaultdict(int)
    for r in rows:
        corpora[r.corpus] += 1
    record = {"k": k, "holdout": holdout, "fit_seeds": len(fit), "held_back_seeds": len(val),
              "corpora": dict(sorted(corpora.items())),
              "held_back_precision_at_10": {n: round(f[0], 4) for n, f in figures.items()},
              "held_back_first_precision_at_10": {n: round(f[1], 4)
                                                  for n, f in figures.items()},
              "fitted_weights": dict(zip(FEATURES, candidates["learned"].weights, strict=True))}
    if best in PARTS:
        return Combination.part(best, record)
    learned = fit_weights(rows, seed=seed)
    if best == PROBE_FIRST:
        return Combination(probe_first(learned, rows), PROBE_FIRST, record)
    return Combination(learned, "learned", record)


def probe_first(weights: Sequence[float], rows: Sequence[SeedRows], room: float = 5e-4
                ) -> tuple[float, ...]:
    """The probe part's weights plus ``weights`` scaled so that the spread of their scores
    over ``rows`` is ``room``, below a thousandth (the probe's least step: one confirmed hit
    more): the probe ranks, the fitted weights break its ties."""
    scores = [s for r in rows for s in Combination(tuple(weights)).scores(r.features)]
    spread = (max(scores) - min(scores)) if scores else 0.0
    scale = room / spread if spread > 0 else 0.0
    return tuple(p + scale * w for p, w in zip(Combination.part("probe").weights, weights,
                                               strict=True))


def fit_combination(corpora: Mapping[str, Sequence[LabelledItem]],
                    extractor: TransformersExtractor | None, *, k: int = 4,
                    max_seeds: int = 100, split_seed: int = 0,
                    rows: Mapping[str, Sequence[SeedRows]] | None = None) -> Combination:
    """The combination chosen (:func:`choose`) on the training seeds of ``corpora`` (at most
    ``max_seeds`` a corpus; ``rows``: corpus -> its rows, already made), its record completed
    with the model's version, the corpora's data hashes, the split and the library
    versions."""
    if rows is None:
        rows = {name: corpus_rows(name, items, extractor, k=k, max_seeds=max_seeds,
                                  split_seed=split_seed) for name, items in corpora.items()}
    chosen = choose([row for found in rows.values() for row in found], k=k, seed=split_seed)
    record = {**chosen.record,
              "model_version": extractor.model_version if extractor is not None else None,
              "data": {name: data_hash(items) for name, items in corpora.items()},
              "split_seed": split_seed, "max_seeds": max_seeds, "versions": library_versions(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return Combination(chosen.weights, chosen.kind, record)
