"""The OpenSearch backend against its own ceilings in the same run, on the local cluster
(``qexplorer opensearch start``; each repeat in a scratch index, deleted after):

- **indexing**: listings/s through ``OpenSearchIndex.apply`` + ``commit`` (the replica's path:
  the Python analysis, versioned bulk writes, refresh, the offsets) against raw ``_bulk`` of
  the same documents already built, from one client, and a refresh (the cluster's ceiling);
- **fan-out**: a seed's queries/s through ``search_many`` (four queries, one ``_msearch``)
  against raw ``_msearch`` of the same request bodies;
- **freshness**: one listing's apply-to-searchable latency (``commit``: bulk, refresh,
  offsets) against a raw single-document write with ``refresh=true``;
- **size**: bytes on disk a listing (primaries) and the nodes' Java heap in use after indexing,
  the figures the scaling table in docs/benchmarks.md extrapolates from.

``qexplorer bench --only opensearch`` (optional: it needs the cluster).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from bench.common import synthetic_items
from bench.report import comparison, latency_summary
from qexplorer.config import Settings
from qexplorer.marketplace.items import to_listing_dict
from qexplorer.search.opensearch_index import OpenSearchIndex, listing_document, query_clauses
from qexplorer.search.protocol import Change
from schemas.models import ListingUpsert

SEEDS = 200
FRESHNESS_SAMPLES = 50


def _queries(items) -> list[list[str]]:
    """Four queries a seed, as a keyword extractor would give them: words of its text."""
    out = []
    for item in [i for i in items if i.harmful][:SEEDS]:
        words = f"{item.title} {item.description}".split()
        out.append([" ".join(words[n:n + 2]) for n in range(0, 8, 2)])
    return out


def _raw_bulk(index: OpenSearchIndex, docs: list[dict], batch: int) -> None:
    cluster = index._cluster
    for start in range(0, len(docs), batch):
        lines = []
        for doc in docs[start:start + batch]:
            lines += [orjson.dumps({"index": {"_index": index.name, "_id": doc["id"]}}),
                      orjson.dumps(doc)]
        cluster.request("POST", "/_bulk", b"\n".join(lines) + b"\n")
    cluster.request("POST", f"/{index.name}/_refresh")


def _raw_msearch(index: OpenSearchIndex, seeds: list[list[str]]) -> None:
    header = orjson.dumps({"index": index.name, "search_type": "dfs_query_then_fetch"})
    for queries in seeds:
        lines = []
        for query in queries:
            clauses = query_clauses(query)
            if clauses is not None:
                lines += [header, orjson.dumps({"size": 10, "query": clauses})]
        index._cluster.request("POST", "/_msearch", b"\n".join(lines) + b"\n")


def run(settings: Settings, *, size: int, repeats: int,
        progress: Callable[[str], None] = print) -> dict:
    """The OpenSearch benchmark for the aggregate report (``bench.run``)."""
    cluster = settings.opensearch
    items = synthetic_items(size)
    listings = [ListingUpsert(**to_listing_dict(i)) for i in items]
    changes = [Change(listing, None, (0, n)) for n, listing in enumerate(listings)]
    docs = [listing_document(listing, (0, n)) for n, listing in enumerate(listings)]
    seeds = _queries(items)
    n_queries = sum(len(q) for q in seeds)
    pipeline, raw, fan, raw_fan, fresh, raw_fresh, sizes = [], [], [], [], [], [], []
    heaps: list[int] = []
    latencies: list[float] = []
    for repeat in range(repeats):
        index = OpenSearchIndex.scratch(cluster)
        try:
            started = time.perf_counter()
            index.apply(changes)
            index.commit({"bench": {0: len(changes)}})
            pipeline.append(len(changes) / (time.perf_counter() - started))
            started = time.perf_counter()
            for queries in seeds:
                began = time.perf_counter()
                index.search_many(queries, 10)
                latencies.append(time.perf_counter() - began)
            fan.append(n_queries / (time.perf_counter() - started))
            started = time.perf_counter()
            _raw_msearch(index, seeds)
            raw_fan.append(n_queries / (time.perf_counter() - started))
            for n in range(FRESHNESS_SAMPLES):
                change = Change(listings[n], None, (1, n))
                started = time.perf_counter()
                index.apply([change])
                index.commit({"bench": {1: n + 1}})
                fresh.append(time.perf_counter() - started)
                started = time.perf_counter()
                index._cluster.request("PUT", f"/{index.name}/_doc/raw-{n}", docs[n],
                                       refresh="true")
                raw_fresh.append(time.perf_counter() - started)
            index._cluster.request("POST", f"/{index.name}/_forcemerge", max_num_segments=1)
            # the merged-away files go at the next flush: measure after it
            index._cluster.request("POST", f"/{index.name}/_flush", force="true")
            index.refresh()
            stats = index._cluster.request("GET", f"/{index.name}/_stats/store")
            sizes.append(stats["_all"]["primaries"]["store"]["size_in_bytes"] / len(changes))
            nodes = index._cluster.request("GET", "/_nodes/stats/jvm")["nodes"].values()
            heaps.append(sum(n["jvm"]["mem"]["heap_used_in_bytes"] for n in nodes))
        finally:
            index.close()
        ceiling = OpenSearchIndex.scratch(cluster)
        try:
            started = time.perf_counter()
            _raw_bulk(ceiling, docs, cluster.bulk_docs)
            raw.append(len(docs) / (time.perf_counter() - started))
        finally:
            ceiling.close()
        progress(f"opensearch repeat {repeat + 1}/{repeats}: indexing {pipeline[-1]:,.0f}/s "
                 f"(raw _bulk {raw[-1]:,.0f}/s), fan-out {fan[-1]:,.0f} queries/s (raw "
                 f"_msearch {raw_fan[-1]:,.0f}/s)")
    fresh_p50 = latency_summary(fresh)["p50_ms"]
    raw_p50 = latency_summary(raw_fresh)["p50_ms"]
    rows = [
        comparison("opensearch", "indexing, listings/s (apply + commit)", "/s", pipeline,
                   ceiling=raw, ceiling_name="raw _bulk, documents prebuilt"),
        comparison("opensearch", "search fan-out, queries/s", "/s", fan,
                   ceiling=raw_fan, ceiling_name="raw _msearch, same bodies"),
        comparison("opensearch", "freshness: one listing to searchable, p50", "ms", [fresh_p50],
                   ceiling=[raw_p50], ceiling_name="raw write, refresh=true", better="lower"),
        comparison("opensearch", "disk a listing (primaries, merged)", "B", sizes),
    ]
    notes = [f"{size:,} synthetic listings, {cluster.shards} shards x {cluster.replicas} "
             f"replicas on {len(cluster.urls)} nodes ({', '.join(cluster.urls)}); {SEEDS} seeds "
             f"x 4 queries; bulk {cluster.bulk_docs}; freshness over {FRESHNESS_SAMPLES} "
             "single-listing commits a repeat"]
    probe = OpenSearchIndex.connect(cluster, "-")
    try:
        server = probe._cluster.request("GET", "/")["version"]["number"]
    finally:
        probe.close()
    notes.append(f"OpenSearch {server}, Java heap {settings.opensearch.local_heap} a node when "
                 "local")
    return {"params": {"size": size, "repeats": repeats, "shards": cluster.shards,
                       "opensearch_version": server,
                       "replicas": cluster.replicas, "nodes": len(cluster.urls),
                       "bulk_docs": cluster.bulk_docs},
            "rows": rows, "notes": notes,
            "details": {"seed_search_ms": latency_summary(latencies),
                        "heap_used_bytes": heaps,
                        "freshness_ms": latency_summary(fresh),
                        "raw_freshness_ms": latency_summary(raw_fresh),
                        "bytes_per_listing": sizes}}
