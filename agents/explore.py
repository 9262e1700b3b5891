"""Pure exploration logic: from a seed's per-query search results to detections and feedback.

No I/O here: the explorer agent calls these with what the extractor and the searcher returned.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from schemas.models import Detection, SearchFeedback, SearchHit, detection_key, utcnow


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: a listing, its 1-based rank and its BM25 score."""

    listing_id: str
    rank: int
    score: float
    title: str = ""


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
            entry.title = entry.title or hit.title
    detections = [
        Detection(
            key=detection_key(seed_id, listing_id, provenance.model_version),
            seed_id=seed_id,
            listing_id=listing_id,
            listing_title=entry.title[:1_000],
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


def explored_key(seed_id: str, model_version: str) -> str:
    """Key of the 'explored' table: a seed is explored once per model version."""
    return f"{model_version}\x1f{seed_id}"
