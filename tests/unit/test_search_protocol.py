"""The search protocol (``search.protocol``) and its Tantivy implementation, without a broker.

``TantivyIndex`` satisfies :class:`SearchIndex` and :class:`TermStats`; ``apply`` + ``commit``
make upserts and deletes searchable together with the offsets they came from; the ``search``
helper is one query of ``search_many``; ``search.memory_index`` and ``search.open_replica``
open indexes by name. And the parity the workers and the evaluation rely on: TF-IDF is the
same in a worker (its extractor built by the registry over its replica) and in the evaluation
(``qexplorer.evaluation.evaluate.baseline_extractors`` over the corpus's ``Searcher``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.extractor.base import SeedText
from agents.extractor.keywords import KeywordsExtractor, tfidf_terms
from agents.extractor.priors import seed_text
from agents.extractor.registry import build_extractor
from qexplorer.config import ExtractorSettings, IndexSettings, OpenSearchSettings
from qexplorer.evaluation.evaluate import baseline_extractors
from qexplorer.evaluation.scoring import Searcher
from qexplorer.marketplace.items import LabelledItem, to_listing_dict
from qexplorer.marketplace.synthetic import generate_marketplace
from qexplorer.search import BACKENDS, memory_index, open_replica
from qexplorer.search.protocol import Change, Hit, SearchIndex, TermStats, search
from qexplorer.search.tantivy_index import TantivyIndex
from schemas.codec import encode
from schemas.models import ListingDelete, ListingUpsert

#: Every member the protocols declare (TermStats' and SearchIndex's own).
MEMBERS = ("doc_freq", "count", "apply", "pending", "commit", "committed_offsets",
           "search_many", "search_arrivals", "close")


def _upsert(id: str, title: str, description: str = "") -> Change:
    listing = ListingUpsert(id=id, title=title, description=description)
    return Change(listing, encode(listing))


def _delete(id: str) -> Change:
    return Change(ListingDelete(id=id))


@pytest.fixture
def index() -> TantivyIndex:
    ix = TantivyIndex.open(None, heap_mb=32)
    yield ix
    ix.close()


# --- the protocol ------------------------------------------------------------------------------


def test_the_members_listed_here_are_the_protocols_members() -> None:
    declared = {name for proto in (TermStats, SearchIndex) for name in vars(proto)
                if not name.startswith("_")}
    assert declared == set(MEMBERS)


def test_tantivy_index_satisfies_the_protocols(index: TantivyIndex) -> None:
    assert isinstance(index, SearchIndex) and isinstance(index, TermStats)
    # implemented, not inherited from the protocol's stubs (which return None)
    for name in MEMBERS:
        assert name in vars(TantivyIndex), name
    assert isinstance(index.pending, int) and isinstance(index.count(), int)
    assert isinstance(index.doc_freq("anything"), int)


def test_the_protocols_are_structural() -> None:
    class Stats:
        def doc_freq(self, term: str) -> int:
            return 0

        def count(self) -> int:
            return 0

    assert isinstance(Stats(), TermStats)
    assert not isinstance(Stats(), SearchIndex)  # no apply, commit, search_many ...
    assert not isinstance(object(), TermStats)


# --- apply and commit --------------------------------------------------------------------------


def test_apply_and_commit_make_upserts_and_deletes_searchable_with_their_offsets(
        index: TantivyIndex) -> None:
    index.apply([
        _upsert("a", "red bicycle", "city bike"),
        _upsert("b", "blue kettle"),
        Change(ListingUpsert(id="c", title="green lamp")),  # no source message: encoded
        _delete("b"),
        _upsert("a", "red tandem bicycle"),  # an edit replaces the listing
        _upsert("d", "oak chair"),
        _delete("never-there"),
    ])
    assert index.pending == 7
    assert index.count() == 0 and search(index, "bicycle", 10) == []  # not committed yet
    index.commit({"t.listings": {0: 5, 3: 2}})
    assert index.pending == 0
    assert index.ids() == {"a", "c", "d"} and index.count() == 3
    assert index.committed_offsets() == {"t.listings": {0: 5, 3: 2}}
    assert [h.listing_id for h in search(index, "bicycle", 10)] == ["a"]
    assert search(index, "tandem", 10)[0].title == "red tandem bicycle"
    assert search(index, "kettle", 10) == []
    assert [h.listing_id for h in search(index, "lamp", 10)] == ["c"]

    index.apply([_delete("a"), _upsert("b", "blue kettle again")])
    index.commit({"t.listings": {0: 7, 3: 2}})
    assert index.ids() == {"b", "c", "d"}
    assert index.committed_offsets() == {"t.listings": {0: 7, 3: 2}}
    index.commit(None)  # a commit without offsets keeps the last ones
    assert index.committed_offsets() == {"t.listings": {0: 7, 3: 2}}


def test_a_new_index_has_no_offsets_and_an_uncommitted_change_is_lost(tmp_path: Path) -> None:
    ix = TantivyIndex.open(tmp_path / "i")
    assert ix.committed_offsets() == {} and ix.count() == 0
    ix.apply([_upsert("a", "lamp")])
    ix.commit({"listings": {0: 1}})
    ix.apply([_upsert("b", "chair"), _delete("a")])
    ix.close()
    again = TantivyIndex.open(tmp_path / "i")
    assert again.ids() == {"a"} and again.committed_offsets() == {"listings": {0: 1}}
    again.close()


# --- search ------------------------------------------------------------------------------------


def test_search_arrivals_finds_only_the_batch_with_the_whole_index_scores(
        index: TantivyIndex) -> None:
    """The standing queries' search: only listings whose current version came from the
    given (partition, offset) ranges, each scored as a search of everything scores it."""
    titles = ["snow boots", "snow globe", "garden chair", "snow chair", "red snow sled"]
    changes = [Change(c.event, c.source, (i % 2, 100 + i))
               for i, c in enumerate(_upsert(f"l{i}", t) for i, t in enumerate(titles))]
    index.apply(changes)
    index.apply([Change(_upsert("l1", "snow globe").event, None, (1, 200))])  # l1 edited later
    index.commit(None)
    everything = {h.listing_id: h.score for h in search(index, "snow chair", 10)}
    # partition 0 holds l0 (100), l2 (102), l4 (104); partition 1 l3 (103) and l1 now at 200
    found = index.search_arrivals(["snow chair", "garden", "nothing"],
                                  {0: (101, 104), 1: (100, 103)}, 10)
    assert [h.listing_id for h in found[0]] == ["l3", "l2", "l4"]  # not l0 (before), l1 (later)
    assert all(h.score == pytest.approx(everything[h.listing_id]) for h in found[0])
    assert [h.rank for h in found[0]] == [1, 2, 3]
    assert [h.listing_id for h in found[1]] == ["l2"] and found[2] == []
    assert [h.listing_id for h in index.search_arrivals(["snow"], {1: (200, 200)}, 10)[0]] \
        == ["l1"]
    assert [h.listing_id for h in index.search_arrivals(["snow chair"], {0: (101, 104)}, 1)[0]] \
        == ["l2"]
    assert index.search_arrivals(["snow"], {}, 10) == [[]]
    floor = everything["l2"]  # min_scores: hits below their query's are left out
    assert [h.listing_id for h in index.search_arrivals(
        ["snow chair", "snow chair"], {0: (101, 104), 1: (100, 103)}, 10,
        [floor, 0.0])[0]] == ["l3", "l2"]



def test_the_search_helper_is_one_query_of_search_many(index: TantivyIndex) -> None:
    index.apply([_upsert(f"l{i}", title) for i, title in enumerate(
        ["snow boots", "snow globe", "fresh snow tg", "garden chair", "snow chair", "加微信 abc"])])
    index.commit(None)
    queries = ["snow", "chair", "snow chair", "加微信", "nothing here", "*:*", ""]
    for limit in (1, 2, 10):
        for exclude in ((), ("l0",), ("l0", "l4")):
            many = index.search_many(queries, limit, exclude)
            assert len(many) == len(queries)
            for query, hits in zip(queries, many, strict=True):
                assert search(index, query, limit, exclude) == hits
                assert index.search(query, limit, exclude) == hits
                assert all(isinstance(h, Hit) and h.listing_id not in exclude for h in hits)
                assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
                assert len(hits) <= limit
    assert {h.listing_id for h in search(index, "snow", 10)} == {"l0", "l1", "l2", "l4"}


def test_memory_index_is_an_empty_working_search_index() -> None:
    ix = memory_index()
    try:
        assert isinstance(ix, SearchIndex)
        assert ix.count() == 0 and ix.committed_offsets() == {}
        ix.apply([_upsert("x", "vintage lamp"), _upsert("y", "lamp shade")])
        ix.commit({"listings": {1: 2}})
        assert ix.count() == 2 and ix.doc_freq("lamp") == 2 and ix.doc_freq("shade") == 1
        assert {h.listing_id for h in search(ix, "lamp", 10)} == {"x", "y"}
        assert ix.committed_offsets() == {"listings": {1: 2}}
    finally:
        ix.close()
    other = memory_index()  # each call is a new index
    assert other.count() == 0
    other.close()


def test_open_replica_opens_the_configured_engine(tmp_path: Path) -> None:
    assert "tantivy" in BACKENDS
    ix, rebuilt = open_replica(IndexSettings.model_validate({"backend": "tantivy"}), tmp_path,
                              OpenSearchSettings(), "listings")
    try:
        assert isinstance(ix, TantivyIndex) and rebuilt is None
        ix.apply([_upsert("a", "lamp")])
        ix.commit({"listings": {0: 1}})
    finally:
        ix.close()
    assert (tmp_path / "index").is_dir()
    again, _ = open_replica(IndexSettings.model_validate({}), tmp_path, OpenSearchSettings(),
                            "listings")  # tantivy by default
    assert again.count() == 1 and again.committed_offsets() == {"listings": {0: 1}}
    again.close()


def test_open_replica_refuses_an_unknown_engine_naming_the_setting(tmp_path: Path) -> None:
    settings = IndexSettings.model_validate({"backend": "elasticsearch"})
    with pytest.raises(ValueError, match="QEXPLORER_SEARCH_BACKEND") as info:
        open_replica(settings, tmp_path, OpenSearchSettings(), "listings")
    assert "elasticsearch" in str(info.value) and "tantivy" in str(info.value)
    assert not any(tmp_path.iterdir())  # nothing was created


# --- TF-IDF parity: the worker and the evaluation ----------------------------------------------


@pytest.fixture(scope="module")
def corpus() -> list[LabelledItem]:
    return generate_marketplace(n_benign=600, seed=7)


@pytest.fixture(scope="module")
def seeds(corpus: list[LabelledItem]) -> list[SeedText]:
    harmful = [SeedText(i.id, i.title, i.description) for i in corpus if i.harmful]
    assert len(harmful) >= 50
    return harmful


@pytest.fixture(scope="module")
def replica_index(corpus: list[LabelledItem], tmp_path_factory) -> TantivyIndex:
    """A worker's replica of the corpus: opened as a worker opens it, filled through
    ``apply`` in fetches of listing messages, each fetch committed with its offsets."""
    directory = tmp_path_factory.mktemp("worker")
    index, _ = open_replica(IndexSettings.model_validate({}), directory, OpenSearchSettings(),
                            "listings")
    assert isinstance(index, TantivyIndex)
    fetch = 128
    for start in range(0, len(corpus), fetch):
        listings = [ListingUpsert(**to_listing_dict(item)) for item in corpus[start:start + fetch]]
        index.apply(Change(listing, encode(listing)) for listing in listings)
        index.commit({"listings": {0: start + len(listings)}})
    assert index.committed_offsets() == {"listings": {0: len(corpus)}}
    assert index.count() == len(corpus)
    yield index
    index.close()


def _queries(extractor: KeywordsExtractor, seeds: list[SeedText]) -> dict[str, list[str]]:
    return {e.seed_id: e.queries for e in extractor.extract_sync(seeds, 4)}


def test_tfidf_is_the_same_in_the_worker_and_in_the_evaluation(
        corpus: list[LabelledItem], seeds: list[SeedText],
        replica_index: TantivyIndex) -> None:
    settings = ExtractorSettings.model_validate({"backend": "keywords", "model": "tfidf"})
    worker = build_extractor(settings, replica_index)
    searcher = Searcher(corpus)
    evaluation = baseline_extractors(searcher)["tfidf"]
    assert isinstance(worker, KeywordsExtractor) and worker.method == "tfidf"
    assert isinstance(evaluation, KeywordsExtractor) and evaluation.method == "tfidf"
    assert worker.model_version == evaluation.model_version

    # the same statistics...
    assert replica_index.count() == searcher.index.count() == len(corpus)
    terms = {t.lower() for s in seeds[:40] for t in tfidf_terms(seed_text(s), 50)}
    assert terms
    for term in sorted(terms):
        assert replica_index.doc_freq(term) == searcher.index.doc_freq(term), term
    # ...so the same queries, for every harmful item
    worker_queries = _queries(worker, seeds)
    assert worker_queries == _queries(evaluation, seeds)
    assert all(worker_queries.values())


class TermFrequencyOnly(KeywordsExtractor):
    """The old evaluation's TF-IDF: terms ranked by their frequency in the seed alone."""

    def candidates(self, seed: SeedText, k: int) -> list[str]:
        text = seed_text(seed)
        return tfidf_terms(text, max(2 * k, k + 4)) if text else []


def test_the_parity_test_would_catch_term_frequency_only_ranking(
        seeds: list[SeedText], replica_index: TantivyIndex) -> None:
    settings = ExtractorSettings.model_validate({"backend": "keywords", "model": "tfidf"})
    worker = _queries(build_extractor(settings, replica_index), seeds)
    old = _queries(TermFrequencyOnly("tfidf", stats=replica_index), seeds)
    differing = [seed_id for seed_id in worker if worker[seed_id] != old[seed_id]]
    assert differing, "tf-only ranking gives the same queries: the parity test proves nothing"
