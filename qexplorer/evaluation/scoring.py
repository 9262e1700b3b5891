"""Search-based scoring of queries: the metrics of the evaluation protocol and of the data.

One :class:`Searcher` holds a corpus in an in-memory search index (``search.memory_index``:
the same analyzer and query escaping as the workers). A query's score is its precision@10:
the harmful share of its top-10 results other than the seed (0 when it finds nothing); its kin
precision is the share of the seed's siblings (the generative data's reward). Per
seed, the protocol's metrics (``qexplorer.evaluation.evaluate.PROTOCOL``) average over its queries;
recall@100 counts the seed's siblings in the union of its queries' top 100.

The oracle (:func:`best_span`) is a seed's single best word span chosen with the labels: the
ceiling of what search feedback on the seed's own spans can teach an extractive model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agents.extractor.base import SeedText
from agents.extractor.priors import TermCounts, WithToxic
from agents.queries import SPAN_LIMIT, SPAN_WORDS, is_valid_query, seed_spans
from qexplorer.marketplace.corpora import siblings
from qexplorer.marketplace.items import LabelledItem, to_listing_dict
from qexplorer.search import memory_index
from qexplorer.search.protocol import Change, SearchIndex
from schemas.models import ListingUpsert

TOP = 10
DEEP = 100


class Searcher:
    """A labelled corpus in an in-memory index; results are cached per (query, seed).
    ``fold=False``: without the disguise folding (``search.normalize``; the disguise
    benchmark's "before"). ``index``: an empty index of another engine to hold the corpus
    (``search.corpus_index``; the caller closes it)."""

    def __init__(self, items: Sequence[LabelledItem], *, fold: bool = True,
                 index: SearchIndex | None = None) -> None:
        self.index = memory_index(fold=fold) if index is None else index
        self.index.apply(Change(ListingUpsert(**to_listing_dict(item))) for item in items)
        self.index.commit(None)
        self.harmful = frozenset(i.id for i in items if i.harmful)
        self.siblings = siblings(items)
        self.size = len(items)
        self._cache: dict[tuple[str, str], list[str]] = {}

    def with_confirmed(self, confirmed: Iterable[LabelledItem]) -> WithToxic:
        """The index's term statistics with ``confirmed`` as the confirmed toxic items, the
        probe searching through this cache: what ``contrast`` and ``probe`` read."""
        return WithToxic(self.index, TermCounts(SeedText(i.id, i.title, i.description)
                                                for i in confirmed), search=self.top_ids)

    def ids(self, query: str, seed_id: str, limit: int = DEEP) -> list[str]:
        """Ids of the top ``limit`` (at most 100) results, the seed excluded."""
        self.prefetch([query], seed_id)
        return self._cache[(query, seed_id)][:limit]

    def prefetch(self, queries: Iterable[str], seed_id: str, batch: int = 64) -> None:
        """Search the uncached ``queries`` of a seed together (``search_many``: one request
        a batch on a remote engine) so the calls that follow read the cache."""
        todo = list(dict.fromkeys(q for q in queries if (q, seed_id) not in self._cache))
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            found = self.index.search_many(chunk, DEEP, (seed_id,))
            for query, hits in zip(chunk, found, strict=True):
                self._cache[(query, seed_id)] = [h.listing_id for h in hits]

    def top_ids(self, queries: list[str], limit: int, seed_id: str) -> list[list[str]]:
        """Each query's top ``limit`` ids (at most 100), the seed excluded, from the cache (the
        ``search`` of ``agents.extractor.keywords.WithToxic``)."""
        self.prefetch(queries, seed_id)
        return [self.ids(query, seed_id, limit) for query in queries]

    def precision(self, query: str, seed_id: str) -> float:
        """Harmful share of the query's top 10 (0 when it finds nothing)."""
        return self._share(query, seed_id, self.harmful)

    def hits(self, query: str, seed_id: str) -> int:
        """Harmful listings among the query's top 10."""
        return self._count(query, seed_id, self.harmful)

    def kin_precision(self, query: str, seed_id: str) -> float:
        """Share of the query's top 10 that are the seed's siblings
        (``qexplorer.marketplace.corpora.siblings``: its cluster; every harmful item where the
        corpus has no clusters), 0 when it finds nothing: a query matching every harmful item
        scores low on a clustered corpus."""
        return self._share(query, seed_id, self.siblings.get(seed_id, frozenset()))

    def kin_hits(self, query: str, seed_id: str) -> int:
        """The seed's siblings among the query's top 10."""
        return self._count(query, seed_id, self.siblings.get(seed_id, frozenset()))

    def _count(self, query: str, seed_id: str, group: frozenset[str]) -> int:
        return sum(i in group for i in self.ids(query, seed_id, TOP))

    def _share(self, query: str, seed_id: str, group: frozenset[str]) -> float:
        top = self.ids(query, seed_id, TOP)
        return sum(i in group for i in top) / len(top) if top else 0.0

    def finds(self, queries: Iterable[str], seed_id: str, n: int) -> list[str]:
        """The first ``n`` of the seed's siblings in the top 10 of ``queries``, in order: what
        moderators would have confirmed from exploring the seed with them."""
        kin = self.siblings.get(seed_id, frozenset())
        queries = [q for q in queries if is_valid_query(q)]
        self.prefetch(queries, seed_id)
        out: list[str] = []
        for query in queries:
            for i in self.ids(query, seed_id, TOP):
                if len(out) == n:
                    return out
                if i in kin and i not in out:
                    out.append(i)
        return out


@dataclass(frozen=True)
class SeedScore:
    """The protocol's metrics for one seed and one method."""

    precision_at_10: float
    hits_at_10: float
    recall_at_100: float | None  # None when the seed has no siblings
    valid_query_rate: float
    #: precision@10 of the first valid query alone: methods compared at one query a seed,
    #: as the oracle's single span is (a method giving fewer queries is not favoured)
    first_precision_at_10: float = 0.0


def score_seed(searcher: Searcher, seed_id: str, queries: Sequence[str], k: int,
               siblings: frozenset[str]) -> SeedScore:
    """Metrics of one seed's queries; ``k`` queries were asked for (missing ones are invalid)."""
    valid = [q for q in queries[:k] if is_valid_query(q)]
    if not valid:
        recall = 0.0 if siblings else None
        return SeedScore(0.0, 0.0, recall, 0.0)
    precisions, hits, found = [], [], set()
    searcher.prefetch(valid, seed_id)
    for query in valid:
        top = searcher.ids(query, seed_id, TOP)
        harmful = sum(i in searcher.harmful for i in top)
        precisions.append(harmful / len(top) if top else 0.0)
        hits.append(harmful)
        found.update(searcher.ids(query, seed_id, DEEP))
    recall = len(found & siblings) / len(siblings) if siblings else None
    return SeedScore(mean(precisions), mean(hits), recall, len(valid) / k, precisions[0])


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean (0 for nothing)."""
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def bootstrap_ci(values: Sequence[float], rounds: int = 1000, seed: int = 0
                 ) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    if not values:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    return (means[math.floor(0.025 * rounds)], means[min(rounds - 1, math.ceil(0.975 * rounds))])


def summarise(scores: Sequence[SeedScore], seed: int = 0) -> dict:
    """The report's figures for one (dataset, method): means, CIs of precision@10 (all queries,
    the first alone), n_seeds."""
    precision = [s.precision_at_10 for s in scores]
    first = [s.first_precision_at_10 for s in scores]
    recalls = [s.recall_at_100 for s in scores if s.recall_at_100 is not None]
    low, high = bootstrap_ci(precision, seed=seed)
    return {
        "precision_at_10": mean(precision),
        "hits_at_10": mean(s.hits_at_10 for s in scores),
        "recall_at_100": mean(recalls),
        "valid_query_rate": mean(s.valid_query_rate for s in scores),
        "n_seeds": len(scores),
        "ci95": [low, high],
        "first_precision_at_10": mean(first),
        "first_ci95": list(bootstrap_ci(first, seed=seed)),
    }


def best_span(searcher: Searcher, seed_id: str, title: str, description: str | None, *,
              max_words: int = SPAN_WORDS, limit: int = SPAN_LIMIT, rng_seed: int = 0
              ) -> str | None:
    """The oracle's query for one seed: of its word spans (``agents.queries.seed_spans``, the
    candidates of the training data by default), the one
    with the highest precision@10 (seed excluded); ties go to more harmful hits, then the
    shorter span, then the alphabetically first. None when the seed has no valid span."""
    spans = seed_spans(title, description, max_words, limit, rng_seed)
    if not spans:
        return None
    searcher.prefetch(spans, seed_id)
    return min(spans, key=lambda q: (-searcher.precision(q, seed_id), -searcher.hits(q, seed_id),
                                     len(q), q))


def gap_closed(model: float, heuristic: float, oracle: float, tolerance: float = 1e-9
               ) -> float | None:
    """The share of the gap from the best heuristic to the oracle that a model closes:
    ``(model - heuristic) / (oracle - heuristic)`` (negative below the heuristic, above 1 past
    the oracle); None when the oracle is not above the heuristic (no gap to close)."""
    if oracle - heuristic <= tolerance:
        return None
    return (model - heuristic) / (oracle - heuristic)
