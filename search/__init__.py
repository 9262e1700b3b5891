"""Search: what QExplorer needs from a search engine (``protocol``), query escaping
(``query``), text hygiene (``text``), disguise folding (``normalize``: the same for listings
and queries), and the engines that implement it.

Engines are chosen by name (``QEXPLORER_SEARCH_BACKEND``): :data:`BACKENDS` maps each to the
function that opens a worker's replica. ``tantivy`` (``search.tantivy_index``) is embedded: a
full index on each worker's disk, no server to run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config import IndexSettings
    from search.protocol import SearchIndex

#: Opens a worker's index in a state directory; returns it and why it was rebuilt (or None).
OpenReplica = Callable[["IndexSettings", Path], "tuple[SearchIndex, str | None]"]


def _open_tantivy(settings: IndexSettings, directory: Path) -> tuple[SearchIndex, str | None]:
    from search.tantivy_index import open_or_rebuild

    return open_or_rebuild(directory / "index", heap_mb=settings.writer_heap_mb,
                           threads=settings.writer_threads)


#: Search engines by name.
BACKENDS: dict[str, OpenReplica] = {"tantivy": _open_tantivy}


def open_replica(settings: IndexSettings, directory: Path) -> tuple[SearchIndex, str | None]:
    """The worker's index for ``settings.backend``, its state under ``directory``."""
    opener = BACKENDS.get(settings.backend)
    if opener is None:
        raise ValueError(f"QEXPLORER_SEARCH_BACKEND={settings.backend!r} is not a search "
                         f"engine: one of {', '.join(BACKENDS)}")
    return opener(settings, directory)


def memory_index(*, fold: bool = True) -> SearchIndex:
    """An in-memory index with the workers' analysis and query semantics (the evaluation's
    and the tests' corpora); ``fold=False`` without the disguise folding (benchmarks)."""
    from search.tantivy_index import TantivyIndex

    return TantivyIndex.open(None, heap_mb=64, fold=fold)
