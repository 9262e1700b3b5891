"""The learned combination in the evaluation: fitted where the model never evaluates, judged
on every corpus's evaluation seeds.

For each corpus, rows of its training seeds (``qexplorer.evaluation.combine.corpus_rows``) and
of its evaluation seeds (the priors reading the whole training side as the confirmed items, as the
``contrast`` and ``probe`` baselines do). Two combinations a corpus, each chosen by
``qexplorer.evaluation.combine.choose``:

* ``learned``: fitted on the *other* corpora's training rows only: how it does on a
  marketplace it never saw (with one corpus there are no others, and it is left out);
* ``learned_own``: fitted on the corpus's own training rows (cluster-disjoint from its
  evaluation seeds): what a deployment fitting on its own search feedback would use.

The evaluation seeds are then ranked by the combination and scored with the protocol's
metrics; the combination chosen is recorded with each row. The combination to deploy is
fitted on every corpus's training rows (``qexplorer.evaluation.combine.fit_combination``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from agents.queries import rank_spans
from qexplorer.evaluation.combine import SeedRows, choose, corpus_rows, fit_combination, seed_rows
from qexplorer.evaluation.scoring import Searcher, score_seed, summarise
from qexplorer.marketplace.corpora import sample_seeds, split_seeds
from qexplorer.marketplace.items import LabelledItem

if TYPE_CHECKING:
    from agents.extractor.combination import Combination
    from agents.extractor.transformers_backend import TransformersExtractor

#: The combinations reported, by label: fitted on the other corpora, or on the corpus's own
#: training side.
LABELS = ("learned", "learned_own")
#: Training seeds a corpus the combinations are fitted on.
FIT_SEEDS = 100


def learned_results(corpora: Mapping[str, Sequence[LabelledItem]],
                    extractor: TransformersExtractor | None, *, k: int = 4,
                    max_seeds: int = 300, split_seed: int = 0, fit_seeds: int = FIT_SEEDS,
                    fit_corpora: Mapping[str, Sequence[LabelledItem]] | None = None,
                    progress: Callable[[str], None] = print
                    ) -> tuple[dict[str, dict], Combination | None]:
    """Label (:data:`LABELS`) -> corpus -> the evaluation's metrics with that combination,
    and the combination (``combination``); ``fit_seeds`` training seeds a corpus are fitted
    on; ``fit_corpora``: more corpora to fit on, not judged (the training sets of a
    leave-one-corpus-out run). Second: the combination to deploy, fitted on every corpus's
    training rows (None when they are too few)."""
    fitting: dict[str, list[SeedRows]] = {
        name: corpus_rows(name, items, extractor, k=k, max_seeds=fit_seeds,
                          split_seed=split_seed)
        for name, items in (fit_corpora or {}).items() if name not in corpora}
    judged: dict[str, tuple[Searcher, list[LabelledItem], list[SeedRows]]] = {}
    for name, items in corpora.items():
        searcher = Searcher(items)
        fitting[name] = corpus_rows(name, items, extractor, k=k, max_seeds=fit_seeds,
                                    split_seed=split_seed, searcher=searcher)
        split = split_seeds(items, seed=split_seed)
        seeds = sample_seeds(split.eval, max_seeds, split_seed)
        stats = searcher.with_confirmed(split.train)
        judged[name] = (searcher, seeds, [seed_rows(name, s, searcher, stats, extractor, k)
                                          for s in seeds])
        progress(f"{name:20s} learned combination: {len(fitting[name])} training seeds, "
                 f"{len(seeds)} evaluation seeds")
    out: dict[str, dict] = {label: {} for label in LABELS}
    for name, (searcher, seeds, rows) in judged.items():
        others = [r for other, found in fitting.items() if other != name for r in found]
        fitted = {"learned_own": fitting[name]} | ({"learned": others} if others else {})
        for label, train in fitted.items():
            try:
                combination = choose(train, k=k, seed=split_seed)
            except ValueError as exc:  # a set too small to fit and check one on
                progress(f"{name:20s} {label}: none ({exc})")
                continue
            out[label][name] = {**_judge(searcher, seeds, rows, combination, k, split_seed),
                                "combination": combination.to_dict()}
            progress(f"{name:20s} {label}: {combination.kind} P@10="
                     f"{out[label][name]['precision_at_10']:.3f}")
    try:
        deploy = fit_combination({**(fit_corpora or {}), **corpora}, extractor, k=k,
                                 split_seed=split_seed, rows=fitting)
    except ValueError as exc:
        progress(f"no combination to deploy ({exc})")
        deploy = None
    return {label: found for label, found in out.items() if found}, deploy


def _judge(searcher: Searcher, seeds: Sequence[LabelledItem], rows: Sequence[SeedRows],
           combination: Combination, k: int, split_seed: int) -> dict:
    """The protocol's metrics of the evaluation seeds ranked by ``combination``."""
    scores = []
    for seed, row in zip(seeds, rows, strict=True):
        queries = rank_spans(row.spans, combination.scores(row.features), k)[0] \
            if row.spans else []
        scores.append(score_seed(searcher, seed.id, queries, k, searcher.siblings[seed.id]))
    return summarise(scores, seed=split_seed)
