"""Pure exploration logic: from a seed's per-query search results to detections and feedback,
and the ledger of which seeds are confirmed and which were explored by which model.

No I/O here: the explorer agent calls these with what the extractor and the search returned;
the worker's replica fills the ledger from the topics.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence, Set
from dataclasses import dataclass, field

from agents.extractor.base import SeedText
from agents.extractor.priors import TermCounts
from qexplorer.search.protocol import Hit
from schemas.models import (
    Detection,
    SearchFeedback,
    SearchHit,
    ToxicItem,
    detection_key,
    explored_key,
    utcnow,
)


@dataclass(frozen=True, slots=True)
class Provenance:
    """Which extractor, model and prompt produced the queries."""

    extractor: str
    model_version: str
    prompt_version: str


@dataclass(slots=True)
class _Merged:
    queries: list[str] = field(default_factory=list)
    best_rank: int = 10**9
    best_score: float = float("-inf")
    title: str = ""
    description: str = ""


def merge_hits(
    seed_id: str,
    per_query: Sequence[tuple[str, Sequence[Hit]]],
    excluded: Collection[str],
    provenance: Provenance,
) -> tuple[list[Detection], list[SearchFeedback]]:
    """Merge each query's hits into one detection per listing and one feedback record per query.

    ``per_query`` holds (query, hits) in query order. The seed itself and every id in
    ``excluded`` (already confirmed toxic) are dropped from detections; feedback keeps every
    result except the seed, so the trainer sees what each query really returned.
    """
    now = utcnow()
    merged: dict[str, _Merged] = {}
    feedback: list[SearchFeedback] = []
    for index, (query, hits) in enumerate(per_query):
        kept = [h for h in hits if h.listing_id != seed_id]
        feedback.append(
            SearchFeedback(
                seed_id=seed_id,
                query=query,
                query_index=index,
                extractor=provenance.extractor,
                model_version=provenance.model_version,
                prompt_version=provenance.prompt_version,
                results=[SearchHit(listing_id=h.listing_id, rank=h.rank, score=h.score)
                         for h in kept],
                executed_at=now,
            )
        )
        for hit in kept:
            if hit.listing_id in excluded:
                continue
            entry = merged.setdefault(hit.listing_id, _Merged())
            if query not in entry.queries:
                entry.queries.append(query)
            entry.best_rank = min(entry.best_rank, hit.rank)
            entry.best_score = max(entry.best_score, hit.score)
            if not (entry.title or entry.description):
                # title and description from the same hit: the text reviewers see (and hash)
                # is one version of the listing
                entry.title, entry.description = hit.title, hit.description
    detections = [
        Detection(
            key=detection_key(seed_id, listing_id, provenance.model_version),
            seed_id=seed_id,
            listing_id=listing_id,
            listing_title=entry.title[:1_000],
            listing_description=entry.description[:20_000],
            queries=entry.queries,
            best_rank=entry.best_rank,
            best_score=entry.best_score,
            extractor=provenance.extractor,
            model_version=provenance.model_version,
            prompt_version=provenance.prompt_version,
            detected_at=now,
        )
        for listing_id, entry in sorted(
            merged.items(), key=lambda kv: (kv[1].best_rank, -kv[1].best_score, kv[0])
        )
    ]
    return detections, feedback


class Ledger:
    """Which items are confirmed toxic, and which (seed, model version) pairs are explored.

    The worker's replica records what the topics say; the explorer records what it has just
    done and asks before exploring. Sets only grow (a confirmed item stays a label). The
    confirmed items' term document frequencies are kept too (:attr:`terms`, what the
    ``contrast`` extractor reads)."""

    def __init__(self) -> None:
        self._confirmed: dict[str, None] = {}  # a dict for its read-only keys() view
        self._explored: set[str] = set()
        self.terms = TermCounts()  # the confirmed items' terms

    @property
    def confirmed(self) -> Set[str]:
        """Every confirmed toxic item id (a read-only view that follows the ledger)."""
        return self._confirmed.keys()

    def confirm(self, item_ids: Iterable[str]) -> None:
        """Record confirmed toxic items."""
        self._confirmed.update(dict.fromkeys(item_ids))

    def confirm_item(self, item: ToxicItem) -> None:
        """Record a confirmed toxic item with its text (its terms are counted once)."""
        self._confirmed[item.id] = None
        self.terms.add(SeedText(item.id, item.title, item.description))

    def is_explored(self, seed_id: str, model_version: str) -> bool:
        """True when this model version has explored this seed."""
        return explored_key(seed_id, model_version) in self._explored

    def mark_explored(self, keys: Iterable[str]) -> None:
        """Record explored pairs by their search-feedback keys (``explored_key``)."""
        self._explored.update(keys)

    @property
    def explored_count(self) -> int:
        """How many (seed, model version) pairs are explored."""
        return len(self._explored)
