"""Tantivy, the embedded search backend: one worker's replica of every listing on its disk.

:class:`TantivyIndex` implements :class:`search.protocol.SearchIndex`. It holds each listing's
tokens (words, CJK characters and emoji, lowercased) as ``search.folding`` makes them, with the
fields of the disguise folding (the normalised text, other readings, Chinese words and pinyin)
and the text as written, applies
upserts and deletes, and commits them atomically together with the Kafka offsets they came
from (a metadata document inside the same commit), so a restarted worker resumes exactly where
its last commit ended.
Search never hands raw text to the query parser: it goes through
``search.query.to_search_text`` and the parser's errors are caught. :func:`open_or_rebuild`
moves a damaged index aside so the replica refills a new one from the topic.
"""

from __future__ import annotations

import base64
import functools
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import tantivy

from qexplorer.search.folding import index_listing, index_listings
from qexplorer.search.normalize import TOKEN_PATTERN
from qexplorer.search.protocol import Arrivals, Change, Hit, Offsets, SearchIndex
from qexplorer.search.query import analyzed_query, folded_clauses, pattern_regex, to_search_text
from schemas.codec import encode
from schemas.models import ListingUpsert

log = logging.getLogger(__name__)

#: Bump when the schema, the analyzer or the folding changes: an index of another version is
#: rebuilt.
INDEX_FORMAT = 7
#: The analyzer the index's tokens are defined by (``search.normalize.analyze``); the index
#: holds them made already (``search.folding``), the benchmarks' raw ceilings analyse with it.
ANALYZER = "qx_text"
#: The analyzer of every text field: tokens made outside Tantivy (``search.folding``),
#: separated by spaces.
TOKENS_ANALYZER = "qx_tokens"
SEARCH_FIELDS = ["title", "description"]
#: With disguise folding a query also searches the other readings of disguised words.
FOLDED_SEARCH_FIELDS = [*SEARCH_FIELDS, "variants"]
# Metadata documents are keyed in a field of their own: no listing id can touch them.
_META_OFFSETS = "offsets"
_META_FORMAT = "format"
#: A listing's position in the listings topic as one i64: partition * 2**40 + offset.
_POSITION_BITS = 40


def position_of(partition: int, offset: int) -> int:
    """The ``kafka_pos`` value of a listing read at (partition, offset)."""
    return (partition << _POSITION_BITS) | offset


class IndexFormatError(RuntimeError):
    """The index directory holds an index this version cannot use (rebuild it)."""


@dataclass(frozen=True, slots=True)
class StoredListing:
    """What the index stores of a listing: what a search hit reports, the id and the text a
    detection carries to its reviewers (title and description). The other fields (category,
    seller, language, ...) are indexed, not stored: the listings topic holds them."""

    id: str
    title: str
    description: str = ""


def analyzer() -> tantivy.TextAnalyzer:
    """The index's tokens as a Tantivy analyzer: :data:`search.normalize.TOKEN_PATTERN` tokens
    (one Han character or symbol, or a run of other letters/digits), those of 40 bytes or more
    dropped, lowercased. The index holds these tokens made by ``search.folding`` (its regex
    tokenizer cost more than the folding); raw ceilings in the benchmarks analyse with it."""
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(TOKEN_PATTERN))
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .build()
    )


def tokens_analyzer() -> tantivy.TextAnalyzer:
    """The analyzer of fields holding tokens made already: split on whitespace, nothing
    else."""
    return tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).build()


def indexed_terms(title: str, description: str = "") -> set[str]:
    """Every token the index holds for a text (``search.normalize.index_fields``): what a
    search can match. A query's are ``indexed_terms(query)``."""
    return {token for tokens in index_listing(title, description).values()
            for token in tokens.split()}


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw")
    builder.add_text_field("kind", stored=False, tokenizer_name="raw")
    builder.add_text_field("title", stored=False, tokenizer_name=TOKENS_ANALYZER)
    builder.add_text_field("description", stored=False, tokenizer_name=TOKENS_ANALYZER)
    # the title and description as written (the text fields hold their tokens)
    builder.add_bytes_field("original", stored=True, indexed=False)
    builder.add_text_field("variants", stored=False, tokenizer_name=TOKENS_ANALYZER)
    builder.add_text_field("words", stored=False, tokenizer_name=TOKENS_ANALYZER)
    builder.add_text_field("pinyin", stored=False, tokenizer_name=TOKENS_ANALYZER)
    builder.add_text_field("category", stored=False, tokenizer_name="raw")
    builder.add_text_field("seller", stored=False, tokenizer_name="raw")
    builder.add_text_field("language", stored=False, tokenizer_name="raw")
    builder.add_integer_field("kafka_pos", stored=False, indexed=False, fast=True)
    builder.add_text_field("meta_key", stored=False, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("meta", stored=True, tokenizer_name="raw", index_option="basic")
    return builder.build()


class TantivyIndex(SearchIndex):
    """A Tantivy index of listings with offset-tracked commits.

    Open it with ``TantivyIndex.open(path)`` (created when missing). ``writable=False`` opens a
    reader only (any number of processes may read; one may write). ``fold=False`` turns the
    disguise folding off on both sides, indexing and search (the benchmarks' "before").
    ``parsed_queries``: how many parsed queries it keeps (a query is parsed the same whatever
    the index holds, so a kept one never goes stale); 0 parses every search anew.
    """

    shared = False  # each worker holds a copy

    def __init__(self, index: tantivy.Index, *, writable: bool, heap_mb: int = 128,
                 threads: int = 1, fold: bool = True, parsed_queries: int = 20_000) -> None:
        self._index = index
        # an index of an earlier format analysed its text itself: readable to learn its format
        self._index.register_tokenizer(ANALYZER, analyzer())
        self._index.register_tokenizer(TOKENS_ANALYZER, tokens_analyzer())
        self._fold = fold
        self.parsed = (functools.lru_cache(maxsize=parsed_queries)(self._parse)
                       if parsed_queries else self._parse)
        self._writer = (
            index.writer(heap_size=heap_mb * 1024 * 1024, num_threads=threads)
            if writable else None
        )
        self._lock = threading.Lock()  # serialises writer calls between threads
        self._pending = 0
        # Hashes of every listing id that may be in the index (deleted ones are forgotten,
        # so it stays the size of the live set). An id not in it is new, and its upsert skips
        # the delete: deletes are applied to every segment at commit and stop the writer's
        # threads from working in parallel (48k listings/s with them, 98k/s without).
        self._known: set[int] = self._load_ids() if writable else set()

    # --- lifecycle -----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | None, *, writable: bool = True, heap_mb: int = 128,
             threads: int = 1, fold: bool = True, parsed_queries: int = 20_000
             ) -> TantivyIndex:
        """Open the index at ``path`` (None: in memory), creating it when it does not exist.
        ``threads`` indexing threads share ``heap_mb`` of writer memory."""
        schema = _schema()
        kwargs = {"writable": writable, "heap_mb": heap_mb, "threads": threads, "fold": fold,
                  "parsed_queries": parsed_queries}
        if path is None:
            return cls(tantivy.Index(schema), **kwargs)
        path.mkdir(parents=True, exist_ok=True)
        if tantivy.Index.exists(str(path)):
            try:
                index = tantivy.Index(schema, path=str(path), reuse=True)
            except ValueError as exc:
                raise IndexFormatError(f"cannot open index at {path}: {exc}") from exc
            opened = cls(index, **kwargs)
            found = opened._meta(_META_FORMAT)
            if found is not None and found != INDEX_FORMAT:
                opened.close()
                raise IndexFormatError(f"index at {path} has format {found}, need {INDEX_FORMAT}")
            return opened
        opened = cls(tantivy.Index(schema, path=str(path)), **kwargs)
        if writable:
            opened._put_meta(_META_FORMAT, INDEX_FORMAT)
            opened.commit(None)
        return opened

    def close(self) -> None:
        """Drop the writer (releases the directory lock); uncommitted changes are lost."""
        if self._writer is not None:
            with self._lock:
                self._writer.rollback()
                self._writer.wait_merging_threads()
            self._writer = None

    # --- writes ------------------------------------------------------------------------------

    def apply(self, changes: Iterable[Change]) -> None:
        """Apply upserts and deletes, in order (visible after the next commit)."""
        changes = list(changes)
        upserts = [c.event for c in changes if isinstance(c.event, ListingUpsert)]
        fields = iter(index_listings([(u.title, u.description) for u in upserts], self._fold))
        for change in changes:
            if isinstance(change.event, ListingUpsert):
                self.upsert(change.event, change.source, change.position,
                            fields=next(fields))
            else:
                self.delete(change.event.id)

    def upsert(self, listing: ListingUpsert, source: bytes | None = None,
               position: tuple[int, int] | None = None,
               fields: dict[str, str] | None = None) -> None:
        """Insert or replace a listing (visible after the next commit).

        ``source`` is the JSON message ``listing`` was validated from (``schemas.codec``):
        tantivy parses it itself, ignoring the fields the index does not hold, which is
        cheaper than Python building the document (5 us a listing). Without it the listing is
        encoded first. ``position`` is where in the listings topic it came from. ``fields``
        are the listing's text fields as the index holds them (``search.folding``), when
        they were made already.
        """
        pos = "" if position is None else f'"kafka_pos":{position_of(*position)},'
        if fields is None:
            fields = index_listing(listing.title, listing.description, self._fold)
        original = base64.b64encode(orjson.dumps([listing.title, listing.description]))
        # a validated message is a JSON object without the index's own fields; its title and
        # description are replaced by their tokens (of a key given twice Tantivy keeps the last)
        message = (encode(listing) if source is None else source).decode().strip()
        doc = ('{"kind":"listing",' + pos + '"original":"' + original.decode() + '",'
               + message[1:-1] + "," + orjson.dumps(fields).decode()[1:])
        key = hash(listing.id)
        with self._lock:
            writer = self._require_writer()
            if key in self._known:
                writer.delete_documents_by_term("id", listing.id)
            else:
                self._known.add(key)
            writer.add_json(doc)
            self._pending += 1

    def delete(self, listing_id: str) -> None:
        """Remove a listing (visible after the next commit)."""
        with self._lock:
            self._require_writer().delete_documents_by_term("id", listing_id)
            # a rollback (only on close) would revive the listing; a reopened index relearns
            # its ids from the commit, so forgetting it here cannot lose a delete
            self._known.discard(hash(listing_id))
            self._pending += 1

    @property
    def pending(self) -> int:
        """Changes applied since the last commit."""
        return self._pending

    def commit(self, offsets: Offsets | None) -> None:
        """Commit pending changes; with ``offsets`` ({topic: {partition: next offset}}) stored
        in the same commit, so the data and the position it reflects can never disagree."""
        with self._lock:
            if offsets is not None:
                self._put_meta(_META_OFFSETS, {t: {str(p): o for p, o in parts.items()}
                                               for t, parts in offsets.items()})
            self._require_writer().commit()
            self._pending = 0
        self._index.reload()

    def _put_meta(self, key: str, value: object) -> None:
        writer = self._require_writer()
        writer.delete_documents_by_term("meta_key", key)
        meta = orjson.dumps(value).decode()
        writer.add_document(tantivy.Document(meta_key=key, kind="meta", meta=meta))

    def _require_writer(self) -> tantivy.IndexWriter:
        if self._writer is None:
            raise RuntimeError("index opened read-only")
        return self._writer

    # --- reads -------------------------------------------------------------------------------

    def _load_ids(self) -> set[int]:
        """Hashes of the ids of every listing in the last commit (one pass at open)."""
        searcher = self._index.searcher()
        total = searcher.num_docs
        if total == 0:
            return set()
        query = tantivy.Query.term_query(self._index.schema, "kind", "listing")
        return {hash(searcher.doc(address).get_first("id"))
                for _, address in searcher.search(query, total).hits}

    @property
    def tantivy_index(self) -> tantivy.Index:
        """The underlying tantivy index (the benchmarks' raw ceilings search it directly)."""
        return self._index

    def reload(self) -> None:
        """See the latest commit (of this or another process)."""
        self._index.reload()

    def _meta(self, key: str) -> object | None:
        searcher = self._index.searcher()
        query = tantivy.Query.term_query(self._index.schema, "meta_key", key)
        hits = searcher.search(query, 1).hits
        if not hits:
            return None
        doc = searcher.doc(hits[0][1])
        return orjson.loads(doc.get_first("meta"))

    def committed_offsets(self) -> dict[str, dict[int, int]]:
        """The Kafka positions stored with the last commit ({} for a new index)."""
        stored = self._meta(_META_OFFSETS) or {}
        return {t: {int(p): int(o) for p, o in parts.items()} for t, parts in stored.items()}

    def count(self) -> int:
        """Number of listings in the last commit."""
        searcher = self._index.searcher()
        query = tantivy.Query.term_query(self._index.schema, "kind", "listing")
        return searcher.search(query, 1, count=True).count  # limit 0 panics

    def doc_freq(self, term: str) -> int:
        """Listings whose title or description holds ``term`` (an analysed, lowercased token);
        the larger of the two fields' counts. Used for TF-IDF."""
        searcher = self._index.searcher()
        return max(searcher.doc_freq(f, term) for f in SEARCH_FIELDS)

    def get(self, listing_id: str) -> StoredListing | None:
        """A committed listing by id, or None."""
        searcher = self._index.searcher()
        hits = searcher.search(
            tantivy.Query.term_query(self._index.schema, "id", listing_id), 1
        ).hits
        return self._stored(searcher.doc(hits[0][1])) if hits else None

    def ids(self) -> set[str]:
        """Every listing id in the last commit (for tests and audits)."""
        searcher = self._index.searcher()
        total = self.count()
        if total == 0:
            return set()
        query = tantivy.Query.term_query(self._index.schema, "kind", "listing")
        return {searcher.doc(addr).get_first("id") for _, addr in
                searcher.search(query, total).hits}

    def search(self, query: str, limit: int, exclude: Iterable[str] = ()) -> list[Hit]:
        """BM25 top ``limit`` listings for a cleaned query, skipping ``exclude`` ids.

        Ranks are 1-based after exclusion. Never raises on odd query text: a query the
        parser rejects returns no hits.
        """
        return self.search_many([query], limit, exclude)[0]

    def search_many(self, queries: Sequence[str], limit: int,
                    exclude: Iterable[str] = ()) -> list[list[Hit]]:
        """:meth:`search` for each of ``queries`` (a seed's fan-out), on one searcher."""
        excluded = set(exclude)
        searcher = self._index.searcher()
        return [self._search(searcher, query, limit, excluded) for query in queries]

    def search_arrivals(self, queries: Sequence[str], arrivals: Arrivals, limit: int,
                        min_scores: Sequence[float] | None = None) -> list[list[Hit]]:
        """:meth:`search_many` among the listings read from ``arrivals`` only: each query
        must match and its listing's ``kafka_pos`` lie in one of the ranges (a filter scored
        0, so the score is the query's BM25 over the whole index). Hits below the query's
        ``min_scores`` entry are not fetched."""
        if not arrivals:
            return [[] for _ in queries]
        floors = [float("-inf")] * len(queries) if min_scores is None else list(min_scores)
        schema = self._index.schema
        ranges = [tantivy.Query.range_query(schema, "kafka_pos", tantivy.FieldType.Integer,
                                            position_of(p, first), position_of(p, last))
                  for p, (first, last) in sorted(arrivals.items())]
        within = ranges[0] if len(ranges) == 1 else tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, r) for r in ranges])
        within = tantivy.Query.const_score_query(within, 0.0)
        searcher = self._index.searcher()
        return [self._search(searcher, query, limit, set(), within, floor)
                for query, floor in zip(queries, floors, strict=True)]

    def _parse(self, query: str) -> tantivy.Query | None:
        """The Tantivy query a search for ``query`` runs (escaped, folded, with its folded
        clauses); None when nothing of it can be searched. ``parsed`` is this, with the last
        ``parsed_queries`` kept. The benchmarks' raw ceiling runs these very queries."""
        text = to_search_text(query, fold=self._fold)
        if not text:
            return None
        tokens = analyzed_query(text)
        if not tokens:
            return None
        try:
            parsed = self._index.parse_query(
                tokens, FOLDED_SEARCH_FIELDS if self._fold else SEARCH_FIELDS)
        except ValueError as exc:
            log.warning("query rejected by the parser: %r (%s)", query, exc)
            return None
        return self._with_folded(parsed, text) if self._fold else parsed

    def _search(self, searcher: tantivy.Searcher, query: str, limit: int,
                excluded: set[str], within: tantivy.Query | None = None,
                floor: float = float("-inf")) -> list[Hit]:
        parsed = self.parsed(query)
        if parsed is None:
            return []
        if within is not None:
            parsed = tantivy.Query.boolean_query([(tantivy.Occur.Must, parsed),
                                                  (tantivy.Occur.Must, within)])
        hits: list[Hit] = []
        for score, address in searcher.search(parsed, max(1, limit + len(excluded))).hits:
            if score < floor:
                break  # hits come best first
            doc = searcher.doc(address)
            listing_id = doc.get_first("id")
            if listing_id not in excluded:
                title, description = self._written(doc)
                hits.append(Hit(listing_id, len(hits) + 1, score, title, description))
                if len(hits) == limit:
                    break
        return hits

    def _with_folded(self, parsed: tantivy.Query, text: str) -> tantivy.Query:
        """``parsed`` and what else disguise folding searches for the query
        (``search.query.folded_clauses``: its Chinese words and sound, pinyin typed for
        characters, masked letters)."""
        clauses = folded_clauses(text)
        if not clauses:
            return parsed
        schema = self._index.schema
        out = [(tantivy.Occur.Should, parsed)]
        for clause in clauses:
            if clause.pattern:
                query = tantivy.Query.regex_query(schema, clause.field,
                                                  pattern_regex(clause.tokens[0]))
            elif len(clause.tokens) == 1:
                query = tantivy.Query.term_query(schema, clause.field, clause.tokens[0])
            else:
                query = tantivy.Query.phrase_query(schema, clause.field, list(clause.tokens))
            out.append((tantivy.Occur.Should, query))
        return tantivy.Query.boolean_query(out)

    @staticmethod
    def _written(doc: tantivy.Document) -> tuple[str, str]:
        """A stored listing's title and description as written."""
        title, description = orjson.loads(doc.get_first("original"))
        return title, description

    @classmethod
    def _stored(cls, doc: tantivy.Document) -> StoredListing:
        title, description = cls._written(doc)
        return StoredListing(id=doc.get_first("id"), title=title, description=description)


def open_or_rebuild(path: Path, **kwargs) -> tuple[TantivyIndex, str | None]:
    """Open the replica at ``path``; when it is corrupted or of another format, move it aside
    (``<path>.broken-<time>``, kept for a post-mortem) and start an empty one, which the replica
    refills from the listings topic (the offsets live inside the index, so an empty index
    means "from the beginning"). Returns the index and why it was rebuilt (None if not)."""
    try:
        return TantivyIndex.open(path, **kwargs), None
    except BaseException as exc:  # tantivy reports some damage as a pyo3 PanicException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        reason = f"{type(exc).__name__}: {exc}"
    aside = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(aside)
    log.error("index at %s unusable (%s): moved to %s, rebuilding from the topic",
              path, reason, aside)
    return TantivyIndex.open(path, **kwargs), reason
