"""OpenSearch, the distributed search backend: one sharded, replicated index for every worker.

:class:`OpenSearchIndex` implements :class:`search.protocol.SearchIndex` over OpenSearch's REST
API (``httpx``; any node of ``QEXPLORER_OPENSEARCH_HOSTS`` answers, a node that does not is
skipped). It is ``shared``: the workers' replicas feed it as one consumer group.

Same results as Tantivy: the analysis is made here, in Python, by the same functions the
Tantivy index uses (``search.normalize.analyze``, the disguise folding, Chinese words and
pinyin), and OpenSearch indexes those tokens with its ``whitespace`` analyzer; a query goes
through ``search.query.to_search_text`` and becomes the clauses Tantivy's parser makes of it
(a term per one-token word, a phrase otherwise, on title, description and variants, summed),
scored by BM25 with the statistics of the whole index (``dfs_query_then_fetch``).

Exactly once from an at-least-once feed: the document id is the listing id and its version
the listing's Kafka offset + 1 (``version_type=external``), so a batch applied twice, or an
older version replayed after a crash, is refused by OpenSearch (409, ignored) and cannot
overwrite a newer one. A delete is a tombstone document with its own version (a real delete
would forget the version and let a replayed upsert bring the listing back); searches and counts
leave tombstones out. :meth:`commit` returns only after every write is acknowledged and
refreshed (searchable), and only then stores the Kafka positions, in a second index
(``<index>.offsets``, one document a partition, versioned by offset so it never goes back).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from qexplorer.config import OpenSearchSettings
from qexplorer.search.folding import index_listing
from qexplorer.search.protocol import Arrivals, Change, Hit, Offsets, SearchIndex
from qexplorer.search.query import analyzed_terms, folded_clauses, pattern_regex, to_search_text
from qexplorer.search.tantivy_index import StoredListing, position_of
from schemas.models import ListingUpsert

log = logging.getLogger(__name__)

#: Bump when the mapping or the analysis changes: a new format is a new index, built from the
#: start of the topic (the old one is left for the operator to delete).
INDEX_FORMAT = 2
SEARCH_FIELDS = ("title", "description")
FOLDED_SEARCH_FIELDS = (*SEARCH_FIELDS, "variants")
#: Doc frequencies are cached this long (TF-IDF weights; they move slowly).
DOC_FREQ_TTL_S = 30.0
#: How long a write keeps being retried while the cluster is unavailable (a node lost,
#: shards being promoted) before the replica gives up and the worker restarts.
RETRY_FOR_S = 120.0
#: ...and a read (a search, a count, the stored positions): its caller decides what a failure
#: means (a seed's search failing is dead-lettered; a position read is "not caught up yet").
READ_RETRY_S = 10.0
#: A _bulk request holds at most this many bytes (OpenSearch refuses more than 100 MB).
BULK_MAX_BYTES = 16 * 1024 * 1024
_RETRYABLE = {429, 502, 503, 504}
_TEXT = {"type": "text", "analyzer": "whitespace"}
MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "_meta": {"qexplorer_format": INDEX_FORMAT},
    "properties": {
        "id": {"type": "keyword"},
        "deleted": {"type": "boolean"},
        "title": _TEXT,
        "description": _TEXT,
        "variants": _TEXT,
        "words": _TEXT,
        "pinyin": _TEXT,
        "category": {"type": "keyword"},
        "seller": {"type": "keyword"},
        "language": {"type": "keyword"},
        "kafka_pos": {"type": "long"},
        # the title and description as written: returned with hits, not indexed
        "shown": {"type": "object", "enabled": False},
    },
}
_OFFSETS_MAPPING = {"dynamic": "strict", "properties": {
    "topic": {"type": "keyword"}, "partition": {"type": "integer"},
    "offset": {"type": "long"}}}


class OpenSearchError(RuntimeError):
    """The cluster refused a request or stayed unavailable."""


def listing_document(listing: ListingUpsert, position: tuple[int, int] | None,
                     fold: bool = True) -> dict[str, Any]:
    """The document of a listing: the tokens of its (normalised) text in the search fields, as
    the Tantivy index holds them (``search.normalize.index_fields``), and the text as written
    in ``shown``. Pure."""
    doc: dict[str, Any] = {
        "id": listing.id, "deleted": False,
        **index_listing(listing.title, listing.description, fold),
        "category": listing.category, "seller": listing.seller, "language": listing.language,
        "shown": {"title": listing.title, "description": listing.description},
    }
    if position is not None:
        doc["kafka_pos"] = position_of(*position)
    return doc


def query_clauses(query: str, fold: bool = True) -> dict[str, Any] | None:
    """The OpenSearch query of a seed's query, the same clauses Tantivy's parser makes of
    ``to_search_text(query)``: each term a term query (one token) or a phrase (several) on each
    search field, all summed; with folding, what else the query searches too
    (``search.query.folded_clauses``).
    None when nothing is left to search. Pure."""
    text = to_search_text(query, fold=fold)
    if not text:
        return None
    fields = FOLDED_SEARCH_FIELDS if fold else SEARCH_FIELDS
    clauses: list[dict[str, Any]] = []
    for tokens in analyzed_terms(text):
        per_field = [{"term": {f: tokens[0]}} if len(tokens) == 1
                     else {"match_phrase": {f: " ".join(tokens)}} for f in fields]
        clauses.append(per_field[0] if len(per_field) == 1
                       else {"bool": {"should": per_field}})
    if fold:
        for clause in folded_clauses(text):
            if clause.pattern:
                clauses.append({"regexp": {clause.field: pattern_regex(clause.tokens[0])}})
            elif len(clause.tokens) == 1:
                clauses.append({"term": {clause.field: clause.tokens[0]}})
            else:
                clauses.append({"match_phrase": {clause.field: " ".join(clause.tokens)}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"bool": {"should": clauses}}


def _chunks(lines: list[bytes], max_lines: int, max_bytes: int):
    """Bulk lines (action and document pairs) in requests of at most ``max_lines`` lines and
    about ``max_bytes`` bytes (a pair alone may be larger)."""
    start = size = 0
    for end in range(0, len(lines), 2):
        pair = len(lines[end]) + len(lines[end + 1]) + 2
        if end > start and (end - start >= max_lines or size + pair > max_bytes):
            yield lines[start:end]
            start, size = end, 0
        size += pair
    if start < len(lines):
        yield lines[start:]


def index_name(listings_topic: str) -> str:
    """The index mirroring a listings topic (names must be lowercase; the format is part of
    the name)."""
    name = re.sub(r"[^a-z0-9._-]", "-", listings_topic.lower()).lstrip("._-+") or "listings"
    return f"{name}-v{INDEX_FORMAT}"


class Cluster:
    """An HTTP client for a list of nodes: a request goes to the node that answered last and
    moves on to the next when one does not answer. Thread-safe."""

    def __init__(self, settings: OpenSearchSettings) -> None:
        self.urls = settings.urls
        if not self.urls:
            raise ValueError("QEXPLORER_OPENSEARCH_HOSTS names no node")
        auth = ((settings.username, settings.password_value() or "")
                if settings.username else None)
        verify: Any = str(settings.ca_file) if settings.ca_file else True
        self._client = httpx.Client(timeout=settings.timeout_s, auth=auth, verify=verify,
                                    headers={"content-type": "application/json"})
        self._current = 0

    def request(self, method: str, path: str, body: Any = None, *, ok: Iterable[int] = (),
                retry_for_s: float = RETRY_FOR_S, **params: Any) -> Any:
        """The JSON answer of ``method path``; a body that is bytes is sent as is (NDJSON).
        Connection failures and 429/5xx answers are retried on the other nodes until
        ``retry_for_s``; statuses in ``ok`` are answers, not errors."""
        content = body if isinstance(body, bytes | None) else orjson.dumps(body)
        deadline = time.monotonic() + retry_for_s
        accepted = {200, 201, *ok}
        pause = 0.2
        while True:
            start = self._current
            failure = ""
            for step in range(len(self.urls)):
                n = (start + step) % len(self.urls)
                try:
                    response = self._client.request(method, self.urls[n] + path,
                                                    content=content, params=params or None)
                except httpx.TransportError as exc:
                    failure = f"{self.urls[n]}: {type(exc).__name__} {exc}"
                    continue
                self._current = n
                if response.status_code in accepted:
                    return response.json() if response.content else {}
                failure = f"{method} {path}: {response.status_code} {response.text[:500]}"
                if response.status_code not in _RETRYABLE:
                    raise OpenSearchError(failure)
                break
            if time.monotonic() + pause > deadline:
                raise OpenSearchError(f"OpenSearch unavailable ({failure})")
            log.warning("OpenSearch unavailable, retrying: %s", failure)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def close(self) -> None:
        """Close the connections."""
        self._client.close()


class OpenSearchIndex(SearchIndex):
    """The listings index of one deployment on an OpenSearch cluster (see the module doc).

    ``OpenSearchIndex.open(settings, name)`` creates the index (and its offsets index) when it
    does not exist. ``scratch=True``: an index of its own that :meth:`close` deletes (the
    evaluation's corpora)."""

    shared = True

    def __init__(self, cluster: Cluster, name: str, settings: OpenSearchSettings, *,
                 fold: bool = True, scratch: bool = False) -> None:
        self._cluster = cluster
        self.name = name
        self.offsets_name = f"{name}.offsets"
        self._settings = settings
        self._fold = fold
        self._scratch = scratch
        self._lock = threading.Lock()  # guards the queue below
        # held for a whole send and a whole commit: a commit (a rebalance's, in another
        # thread) must not store positions while writes it did not wait for are in flight
        self._writing = threading.RLock()
        self._lines: list[bytes] = []  # bulk lines not yet sent
        self._bytes = 0
        self._pending = 0
        self._doc_freq: dict[str, tuple[float, int]] = {}

    @classmethod
    def open(cls, settings: OpenSearchSettings, name: str, *, fold: bool = True,
             scratch: bool = False) -> OpenSearchIndex:
        """Connect and create the index and its offsets index when they do not exist."""
        index = cls(Cluster(settings), name, settings, fold=fold, scratch=scratch)
        index._create(name, MAPPING, settings.shards, settings.replicas)
        index._create(index.offsets_name, _OFFSETS_MAPPING, 1, settings.replicas)
        return index

    @classmethod
    def connect(cls, settings: OpenSearchSettings, name: str) -> OpenSearchIndex:
        """A client on an index that may not exist (nothing is created)."""
        return cls(Cluster(settings), name, settings)

    @classmethod
    def scratch(cls, settings: OpenSearchSettings, *, fold: bool = True) -> OpenSearchIndex:
        """A new index of its own, deleted by :meth:`close`."""
        return cls.open(settings, f"qexplorer-scratch-{uuid.uuid4().hex[:12]}", fold=fold,
                        scratch=True)

    def _create(self, name: str, mapping: dict, shards: int, replicas: int) -> None:
        body = {"settings": {"index": {
                    "number_of_shards": shards, "number_of_replicas": replicas,
                    # searchable at each commit, not every second
                    "refresh_interval": "-1"}},
                "mappings": mapping}
        answer = self._cluster.request("PUT", f"/{name}", body, ok=(400,),
                                       wait_for_active_shards="1")
        error = answer.get("error") if isinstance(answer, dict) else None
        if error and error.get("type") != "resource_already_exists_exception":
            raise OpenSearchError(f"creating index {name}: {error}")

    def close(self) -> None:
        """Drop unsent writes and the connections (a scratch index is deleted)."""
        with self._lock:
            self._lines.clear()
            self._pending = 0
        if self._scratch:
            self.drop()
        self._cluster.close()

    def drop(self) -> None:
        """Delete the index and its offsets index from the cluster (everything indexed)."""
        for name in (self.name, self.offsets_name):
            self._cluster.request("DELETE", f"/{name}", ok=(404,))

    def refresh(self) -> None:
        """Make every write the cluster acknowledged searchable, committed or not."""
        self._cluster.request("POST", f"/{self.name}/_refresh")

    # --- writes ------------------------------------------------------------------------------

    def apply(self, changes: Iterable[Change]) -> None:
        """Queue upserts and deletes (sent in ``bulk_docs`` batches; searchable after
        :meth:`commit`). A change without a Kafka position is versioned by arrival time."""
        for change in changes:
            event = change.event
            version = (change.position[1] + 1 if change.position is not None
                       else time.time_ns())
            action = {"index": {"_index": self.name, "_id": event.id, "version": version,
                                "version_type": "external"}}
            if isinstance(event, ListingUpsert):
                doc = listing_document(event, change.position, self._fold)
            else:
                doc = {"id": event.id, "deleted": True}
                if change.position is not None:
                    doc["kafka_pos"] = position_of(*change.position)
            lines = [orjson.dumps(action), orjson.dumps(doc)]
            with self._lock:
                self._lines += lines
                self._bytes += len(lines[0]) + len(lines[1]) + 2
                self._pending += 1
                full = (len(self._lines) >= 2 * self._settings.bulk_docs
                        or self._bytes >= BULK_MAX_BYTES)
            if full:
                self._flush()

    @property
    def pending(self) -> int:
        """Changes applied since the last commit."""
        return self._pending

    def _flush(self) -> None:
        """Send the queued writes; returns once OpenSearch acknowledged every one."""
        with self._writing:
            with self._lock:
                lines, self._lines, self._bytes = self._lines, [], 0
            deadline = time.monotonic() + RETRY_FOR_S
            for chunk in _chunks(lines, 2 * self._settings.bulk_docs, BULK_MAX_BYTES):
                self._bulk(chunk, deadline)

    def _bulk(self, lines: list[bytes], deadline: float) -> None:
        while lines:
            answer = self._cluster.request("POST", "/_bulk", b"\n".join(lines) + b"\n",
                                           retry_for_s=max(1.0, deadline - time.monotonic()))
            if not answer.get("errors"):
                return
            again: list[bytes] = []
            for n, item in enumerate(answer["items"]):
                result = next(iter(item.values()))
                status = result.get("status", 500)
                if status < 300 or status == 409:  # 409: this or a newer version is in
                    continue
                if status not in _RETRYABLE and status != 500:
                    raise OpenSearchError(f"bulk write refused: {result.get('error')}")
                again += lines[2 * n:2 * n + 2]
            if again and time.monotonic() > deadline:
                raise OpenSearchError(f"bulk writes still failing after {RETRY_FOR_S:.0f} s")
            if again:
                log.warning("retrying %d bulk writes the cluster could not take", len(again) // 2)
                time.sleep(1.0)
            lines = again

    def commit(self, offsets: Offsets | None) -> None:
        """Send every queued write, wait until OpenSearch has acknowledged and refreshed them
        (searchable), then store ``offsets`` (partitions not named keep theirs)."""
        with self._writing:
            self._commit(offsets)

    def _commit(self, offsets: Offsets | None) -> None:
        self._flush()
        self.refresh()
        self._pending = 0
        if not offsets:
            return
        lines = []
        for topic, parts in offsets.items():
            for partition, offset in parts.items():
                lines.append(orjson.dumps({"index": {
                    "_index": self.offsets_name, "_id": f"{topic}:{partition}",
                    "version": offset, "version_type": "external"}}))
                lines.append(orjson.dumps({"topic": topic, "partition": partition,
                                           "offset": offset}))
        if lines:
            self._bulk(lines, time.monotonic() + RETRY_FOR_S)
            self._cluster.request("POST", f"/{self.offsets_name}/_refresh")

    # --- reads -------------------------------------------------------------------------------

    def committed_offsets(self) -> dict[str, dict[int, int]]:
        """The Kafka positions stored by the last commits of every indexer."""
        answer = self._cluster.request("POST", f"/{self.offsets_name}/_search",
                                       {"size": 10_000, "query": {"match_all": {}}},
                                       retry_for_s=READ_RETRY_S)
        out: dict[str, dict[int, int]] = {}
        for hit in answer["hits"]["hits"]:
            source = hit["_source"]
            out.setdefault(source["topic"], {})[int(source["partition"])] = int(source["offset"])
        return out

    def count(self) -> int:
        """Listings searchable now (tombstones left out)."""
        return int(self._cluster.request("POST", f"/{self.name}/_count",
                                         {"query": {"term": {"deleted": False}}},
                                         retry_for_s=READ_RETRY_S)["count"])

    def doc_freq(self, term: str) -> int:
        """Listings whose title or description holds ``term``: the larger of the two
        fields' counts (as Tantivy's), cached :data:`DOC_FREQ_TTL_S`."""
        now = time.monotonic()
        cached = self._doc_freq.get(term)
        if cached is not None and now - cached[0] < DOC_FREQ_TTL_S:
            return cached[1]
        answer = self._cluster.request("POST", f"/{self.name}/_search", {
            "size": 0, "track_total_hits": False, "query": {"term": {"deleted": False}},
            "aggs": {f: {"filter": {"term": {f: term}}} for f in SEARCH_FIELDS}},
            retry_for_s=READ_RETRY_S)
        value = max(int(answer["aggregations"][f]["doc_count"]) for f in SEARCH_FIELDS)
        if len(self._doc_freq) > 100_000:
            self._doc_freq.clear()
        self._doc_freq[term] = (now, value)
        return value

    def get(self, listing_id: str) -> StoredListing | None:
        """A listing by id as written (None when absent or deleted)."""
        answer = self._cluster.request("GET", f"/{self.name}/_doc/{quote(listing_id, safe='')}",
                                       ok=(404,))
        source = answer.get("_source") if answer.get("found") else None
        if source is None or source.get("deleted"):
            return None
        shown = source.get("shown", {})
        return StoredListing(source["id"], shown.get("title", ""), shown.get("description", ""))

    def ids(self) -> set[str]:
        """Every searchable listing id (for tests and audits), a page at a time."""
        found: set[str] = set()
        after: list = []
        while True:
            page = self._cluster.request("POST", f"/{self.name}/_search", {
                "size": 5000, "query": {"term": {"deleted": False}}, "_source": ["id"],
                "sort": [{"id": "asc"}], **({"search_after": after} if after else {})})
            hits = page["hits"]["hits"]
            if not hits:
                return found
            found.update(h["_source"]["id"] for h in hits)
            after = hits[-1]["sort"]

    def search_many(self, queries: Sequence[str], limit: int,
                    exclude: Iterable[str] = ()) -> list[list[Hit]]:
        """BM25 top ``limit`` of each query, ``exclude`` ids left out (one ``_msearch``)."""
        excluded = sorted(set(exclude))
        return self._msearch(queries, limit, excluded, None, None)

    def search_arrivals(self, queries: Sequence[str], arrivals: Arrivals, limit: int,
                        min_scores: Sequence[float] | None = None) -> list[list[Hit]]:
        """:meth:`search_many` among the listings whose current version came from
        ``arrivals`` (a filter on ``kafka_pos``: the score stays the whole index's BM25)."""
        if not arrivals:
            return [[] for _ in queries]
        within = {"bool": {"should": [
            {"range": {"kafka_pos": {"gte": position_of(p, first),
                                     "lte": position_of(p, last)}}}
            for p, (first, last) in sorted(arrivals.items())], "minimum_should_match": 1}}
        return self._msearch(queries, limit, [], within, min_scores)

    def _msearch(self, queries: Sequence[str], limit: int, excluded: list[str],
                 within: dict | None, min_scores: Sequence[float] | None) -> list[list[Hit]]:
        out: list[list[Hit]] = [[] for _ in queries]
        lines: list[bytes] = []
        asked: list[int] = []
        header = orjson.dumps({"index": self.name, "search_type": "dfs_query_then_fetch",
                               "allow_partial_search_results": False})
        for n, query in enumerate(queries):
            clauses = query_clauses(query, self._fold)
            if clauses is None or limit <= 0:
                continue
            filters: list[dict] = [{"term": {"deleted": False}}]
            if within is not None:
                filters.append(within)
            body: dict[str, Any] = {
                "size": limit, "track_total_hits": False, "_source": ["id", "shown"],
                "query": {"bool": {"must": [clauses], "filter": filters,
                                   **({"must_not": [{"ids": {"values": excluded}}]}
                                      if excluded else {})}}}
            if min_scores is not None:
                body["min_score"] = min_scores[n]
            lines += [header, orjson.dumps(body)]
            asked.append(n)
        deadline = time.monotonic() + READ_RETRY_S
        while lines:
            answer = self._cluster.request("POST", "/_msearch", b"\n".join(lines) + b"\n",
                                           retry_for_s=READ_RETRY_S)
            lines, asked = self._read_hits(answer["responses"], lines, asked, queries, out)
            if lines and time.monotonic() > deadline:
                raise OpenSearchError(f"{len(asked)} searches still refused after "
                                      f"{READ_RETRY_S:.0f} s")
            if lines:
                time.sleep(0.5)
        return out

    @staticmethod
    def _read_hits(responses: list[dict], lines: list[bytes], asked: list[int],
                   queries: Sequence[str], out: list[list[Hit]]
                   ) -> tuple[list[bytes], list[int]]:
        """Fill ``out`` from an _msearch answer; returns the searches to send again (refused
        for load or a shard away: never a partial result)."""
        again: list[bytes] = []
        again_asked: list[int] = []
        for i, (n, response) in enumerate(zip(asked, responses, strict=True)):
            if "error" in response:
                if response.get("status", 500) in _RETRYABLE or response.get("status") == 500:
                    again += lines[2 * i:2 * i + 2]
                    again_asked.append(n)
                else:  # a query the engine cannot run finds nothing, as in Tantivy
                    log.warning("query rejected by OpenSearch: %r (%s)", queries[n],
                                response["error"])
                continue
            for rank, hit in enumerate(response["hits"]["hits"], start=1):
                shown = hit["_source"].get("shown", {})
                out[n].append(Hit(hit["_source"]["id"], rank, float(hit["_score"]),
                                  shown.get("title", ""), shown.get("description", "")))
        return again, again_asked
