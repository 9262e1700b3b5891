"""Search: what QExplorer needs from a search engine (``protocol``), query escaping
(``query``), text hygiene (``text``), disguise folding (``normalize``: the same for listings
and queries), and the engines that implement it.

Engines are chosen by name (``QEXPLORER_SEARCH_BACKEND``): :data:`BACKENDS` maps each to the
function that opens a worker's replica. ``tantivy`` (``search.tantivy_index``) is embedded: a
full index on each worker's disk, no server to run. ``opensearch`` (``search.opensearch_index``)
is one sharded, replicated index on a cluster, shared by every worker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qexplorer.config import IndexSettings, OpenSearchSettings
    from qexplorer.search.protocol import SearchIndex

#: Opens a worker's index: (index settings, the worker's state directory, the cluster's
#: settings, the listings topic it mirrors) -> the index and why it was rebuilt (or None).
OpenReplica = Callable[["IndexSettings", Path, "OpenSearchSettings", str],
                       "tuple[SearchIndex, str | None]"]


def _open_tantivy(settings: IndexSettings, directory: Path, _cluster: OpenSearchSettings,
                  _topic: str) -> tuple[SearchIndex, str | None]:
    from qexplorer.search.tantivy_index import open_or_rebuild

    return open_or_rebuild(directory / "index", heap_mb=settings.writer_heap_mb,
                           threads=settings.writer_threads,
                           parsed_queries=settings.parsed_queries)


def _open_opensearch(_settings: IndexSettings, _directory: Path, cluster: OpenSearchSettings,
                     topic: str) -> tuple[SearchIndex, str | None]:
    from qexplorer.search.opensearch_index import OpenSearchIndex, index_name

    return OpenSearchIndex.open(cluster, index_name(topic)), None


#: Search engines by name.
BACKENDS: dict[str, OpenReplica] = {"tantivy": _open_tantivy, "opensearch": _open_opensearch}


def open_replica(settings: IndexSettings, directory: Path, cluster: OpenSearchSettings,
                 topic: str) -> tuple[SearchIndex, str | None]:
    """The worker's index for ``settings.backend``: a Tantivy replica under ``directory``, or
    the cluster's index of the listings ``topic``."""
    opener = BACKENDS.get(settings.backend)
    if opener is None:
        raise ValueError(f"QEXPLORER_SEARCH_BACKEND={settings.backend!r} is not a search "
                         f"engine: one of {', '.join(BACKENDS)}")
    return opener(settings, directory, cluster, topic)


def corpus_index(backend: str = "tantivy", cluster: OpenSearchSettings | None = None, *,
                 fold: bool = True) -> SearchIndex:
    """An index for a labelled corpus (the evaluation's): in memory for ``tantivy``, a scratch
    index that ``close()`` deletes for ``opensearch``."""
    if backend == "tantivy":
        return memory_index(fold=fold)
    if backend == "opensearch":
        from qexplorer.config import OpenSearchSettings
        from qexplorer.search.opensearch_index import OpenSearchIndex

        return OpenSearchIndex.scratch(cluster or OpenSearchSettings(), fold=fold)
    raise ValueError(f"{backend!r} is not a search engine: one of {', '.join(BACKENDS)}")


def memory_index(*, fold: bool = True) -> SearchIndex:
    """An in-memory index with the workers' analysis and query semantics (the evaluation's
    and the tests' corpora); ``fold=False`` without the disguise folding (benchmarks)."""
    from qexplorer.search.tantivy_index import TantivyIndex

    return TantivyIndex.open(None, heap_mb=64, fold=fold)
