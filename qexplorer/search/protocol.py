"""What QExplorer needs from a search engine, and nothing more.

A :class:`SearchIndex` holds every listing: it applies upserts and deletes, makes them
searchable in a commit that also stores the Kafka positions they came from (so a restarted
worker resumes exactly where its index ends), searches a seed's queries, and reports document
frequencies and its size (TF-IDF). The replica, the explorer, the extractors, the trainer's
scoring and the benchmarks use only this protocol; ``search.tantivy_index`` is the first
implementation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from schemas.models import ListingDelete, ListingUpsert

#: Kafka positions: {topic: {partition: the next offset to read}}.
Offsets = Mapping[str, Mapping[int, int]]
#: A batch of the listings topic: {partition: (first offset, last offset)}, both included.
Arrivals = Mapping[int, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: a listing, its 1-based rank, its BM25 score and its text (title and
    description, as the index holds them: what a detection shows its reviewers)."""

    listing_id: str
    rank: int
    score: float
    title: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class Change:
    """One listing event to apply: an upsert or a delete, with the validated JSON message it
    came from when there is one (a backend may index that as is)."""

    event: ListingUpsert | ListingDelete
    source: bytes | None = None
    #: where in the listings topic it came from (partition, offset), when it did: an index
    #: keeps it with the listing so :meth:`SearchIndex.search_arrivals` can find it
    position: tuple[int, int] | None = None


@runtime_checkable
class TermStats(Protocol):
    """Corpus statistics for term weighting (TF-IDF)."""

    def doc_freq(self, term: str) -> int:
        """Listings holding ``term`` (an analysed, lowercased token)."""
        ...

    def count(self) -> int:
        """Listings searchable now."""
        ...


@runtime_checkable
class SearchIndex(TermStats, Protocol):
    """A full-text index of listings with offset-tracked commits. Safe to search from
    several threads; writes come from one.

    ``shared`` tells the replica how to feed it: False, a worker's own copy that reads every
    partition of the listings topic; True, one index for every worker (a cluster) fed by a
    consumer group, each worker indexing its share of the partitions."""

    shared: bool

    def apply(self, changes: Iterable[Change]) -> None:
        """Apply upserts and deletes (searchable after the next :meth:`commit`)."""
        ...

    @property
    def pending(self) -> int:
        """Changes applied since the last commit."""
        ...

    def commit(self, offsets: Offsets | None) -> None:
        """Make pending changes searchable; store ``offsets`` in the same atomic commit, so
        the data and the positions it reflects can never disagree."""
        ...

    def committed_offsets(self) -> dict[str, dict[int, int]]:
        """The positions stored with the last commit ({} for a new index)."""
        ...

    def search_many(self, queries: Sequence[str], limit: int,
                    exclude: Iterable[str] = ()) -> list[list[Hit]]:
        """BM25 top ``limit`` listings of each cleaned query, skipping ``exclude`` ids (ranks
        are 1-based after exclusion). Never raises on odd query text: a query the engine
        cannot parse finds nothing."""
        ...

    def search_arrivals(self, queries: Sequence[str], arrivals: Arrivals, limit: int,
                        min_scores: Sequence[float] | None = None) -> list[list[Hit]]:
        """Like :meth:`search_many`, but only among the listings whose current version came
        from ``arrivals`` (a batch of the listings topic), scored with the whole index's
        statistics: the score a search of everything would give them. With ``min_scores``
        (one a query), hits scoring below their query's are left out."""
        ...

    def close(self) -> None:
        """Release the index (uncommitted changes are lost)."""
        ...


def search(index: SearchIndex, query: str, limit: int, exclude: Iterable[str] = ()
           ) -> list[Hit]:
    """One query's hits (see :meth:`SearchIndex.search_many`)."""
    return index.search_many([query], limit, exclude)[0]
