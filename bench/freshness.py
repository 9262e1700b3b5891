"""Freshness: how long after a listing is published it becomes searchable, at a steady rate.

A worker consumes the ``listings`` topic while this process publishes new listings at a fixed
rate (200/s and 5,000/s by default) for ``phase_s`` seconds per repeat. The worker stores the
Kafka offsets inside each index commit (``SearchIndex.committed_offsets()``), so listing
(partition p, offset o) is searchable from the first commit whose offset for p exceeds o. A
separate poller process opens the worker's index read-only and reloads it every
``poll_s`` (10 ms), recording when each new commit became visible; its own cost per poll is
reported. Latency = first poll that saw the commit - the send time of the listing (the
record's CreateTime, taken just before ``producer.send``; the send-to-acknowledgement time is
reported too). The producer is configured as ``qexplorer.kafka.io.publish`` (acks=all,
linger 5 ms).

The ceiling for context is the worker's commit interval (``QEXPLORER_INDEX_COMMIT_INTERVAL_S``):
a listing waits on average half of it for the next commit, and the commit itself takes time.

**Standing queries** (after those phases, in the same worker): a seed listing written in
invented code words (after two copies, so that its queries find something besides the seed)
is published, then confirmed on ``toxic-items``. Once its exploration's standing queries are on
the ``standing-queries`` topic and a probe relisting in each partition was detected (so the
watcher has caught up with the phases before), each rate is run again for
``standing_phase_s`` with every ``relist_every``-th listing a relisting of the seed (its title
and description plus a unique suffix). A follower process reads ``detections`` from the
beginning and records when each relisting's first detection with a ``standing_query_id``
arrived (its receive time). Latency = that - the relisting's send time; the ceiling is the
same relistings' publish-to-searchable (the watcher matches a batch only once it is
searchable), so the ratio is what the watcher adds. The pace of the detections (a fit of
detection time against position in the phase, in listings a second) against the publishing
rate says whether the watcher kept up; when it does not, the latency grows through the phase
and depends on the phase's length. Relistings never detected (after waiting up to 60 s) are
counted; they must be 0. The worker's /metrics are read between the parts (index commits,
watcher passes). The first phases run with no standing query active, as before.

Usage: ``.venv/bin/python -m bench.freshness --repeats 3 --out .cache/bench`` (broker
running); part of ``qexplorer bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import multiprocessing
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from bench.common import (
    BenchCluster,
    free_port,
    open_view,
    renamed,
    scrape,
    synthetic_listings,
    write_report,
)
from bench.report import comparison, latency_summary, markdown, percentile
from qexplorer.config import KafkaSettings, Settings
from qexplorer.kafka import clients
from qexplorer.kafka.io import read_to_end
from qexplorer.search.tantivy_index import TantivyIndex
from schemas.codec import encode
from schemas.models import ListingUpsert, ToxicItem
from schemas.topics import LISTINGS, TOXIC_ITEMS

RATES = (200, 5_000)
PHASE_S = 10.0
POLL_S = 0.01
WARMUP = 500
#: Standing phases: every RELIST_EVERY-th listing is a relisting of the seed.
RELIST_EVERY = 25
#: How long to wait for a relisting's detection after its phase is searchable.
DETECT_TIMEOUT_S = 60.0
#: The seed: invented code words only, so its standing queries match its relistings alone.
SEED_ID = "fresh-standing-seed"
SEED_TITLE = "Zorvex quillfen marbrook"
SEED_DESCRIPTION = "Tarnwick plovesh zorvex quillfen glimmark dravo yentrac ombrix"
SEED_COPIES = 2

#: One published listing: (partition, offset, send time, acknowledgement time), epoch seconds.
Sent = tuple[int, int, float, float]
#: When a poll first saw a commit: (epoch seconds, {partition: next offset}).
Seen = tuple[float, dict[int, int]]


# --- the poller (a separate process, so it never waits for this one's GIL) -------------------


def poll_commits(index_dir: str, topic: str, interval_s: float, stop, conn) -> None:
    """Reload the worker's index read-only every ``interval_s`` until ``stop`` is set; send
    back the timeline of committed offsets (each change, with the time it was seen) and the
    cost of a poll."""
    path = Path(index_dir)
    reader = open_view(path)
    while reader is None and not stop.is_set():
        time.sleep(interval_s)
        reader = open_view(path)
    if reader is None:
        return
    conn.send("ready")
    timeline: list[Seen] = []
    costs: list[float] = []
    last: dict[int, int] | None = None
    while not stop.is_set():
        started = time.perf_counter()
        reader.reload()
        offsets = reader.committed_offsets().get(topic, {})
        seen_at = time.time()
        cost = time.perf_counter() - started
        costs.append(cost)
        if offsets != last:
            timeline.append((seen_at, offsets))
            last = offsets
        time.sleep(max(0.0, interval_s - cost))
    conn.send({"timeline": timeline, "polls": len(costs),
               "cost_ms": {"mean": statistics.fmean(costs) * 1000 if costs else None,
                           "p99": percentile(costs, 99) * 1000 if costs else None,
                           "max": max(costs) * 1000 if costs else None}})
    conn.close()


class Poller:
    """Runs :func:`poll_commits` in a spawned process for the duration of a ``with`` block."""

    def __init__(self, index_dir: Path, topic: str, interval_s: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=poll_commits, daemon=True,
                                         args=(str(index_dir), topic, interval_s, self._stop,
                                               send))
        self.result: dict = {}

    def __enter__(self) -> Poller:
        self._process.start()
        if not self._receive.poll(120) or self._receive.recv() != "ready":
            self.__exit__()
            raise RuntimeError("the index poller did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._receive.poll(30):
            self.result = self._receive.recv()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


# --- the detections follower (a separate process too) ----------------------------------------


def follow_detections(kafka: KafkaSettings, topic: str, stop, conn) -> None:
    """Read ``topic`` from the beginning until ``stop`` is set; send back, as they arrive,
    the standing detections: batches of (listing id, standing query id, receive time)."""

    async def follow() -> None:
        consumer = clients.reader(kafka, [topic])
        await consumer.start()
        try:
            conn.send("ready")
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=50)
                received = time.time()
                found = []
                for messages in batches.values():
                    for message in messages:
                        record = orjson.loads(message.value)
                        if record.get("standing_query_id"):
                            found.append((record["listing_id"], record["standing_query_id"],
                                          received))
                if found:
                    conn.send(found)
        finally:
            await consumer.stop()

    asyncio.run(follow())
    conn.send("done")
    conn.close()


class DetectionFollower:
    """Runs :func:`follow_detections` in a spawned process for the duration of a ``with``
    block; :meth:`drain` collects what it saw so far."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=follow_detections, daemon=True,
                                         args=(kafka, topic, self._stop, send))
        #: listing id -> when its first standing detection was received
        self.first: dict[str, float] = {}
        #: standing detections received in all (a listing may be matched more than once)
        self.received = 0
        self.queries: set[str] = set()

    def __enter__(self) -> DetectionFollower:
        self._process.start()
        if not self._receive.poll(120) or self._receive.recv() != "ready":
            self.__exit__()
            raise RuntimeError("the detections follower did not start")
        return self

    def drain(self) -> dict[str, float]:
        """Take what the follower sent so far; the first detection time of each listing."""
        while not self._receive.closed and self._receive.poll():
            try:
                found = self._receive.recv()
            except EOFError:  # the follower is gone and everything it sent was read
                self._receive.close()
                break
            if not isinstance(found, list):
                continue
            for listing_id, query, received in found:
                self.received += 1
                self.queries.add(query)
                self.first.setdefault(listing_id, received)
        return self.first

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        deadline = time.monotonic() + 30
        while self._process.is_alive() and time.monotonic() < deadline:
            if not self._receive.closed and self._receive.poll(0.1):
                self.drain()
        self.drain()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


# --- pure parts ------------------------------------------------------------------------------


def searchable_at(timeline: Sequence[Seen], sent: Sequence[Sent]) -> list[float | None]:
    """For each sent listing, when it was first seen searchable (the first timeline entry
    whose committed offset for its partition is past its offset), or None if never."""
    per_partition: dict[int, tuple[list[int], list[float]]] = {}
    for seen_at, offsets in timeline:
        for partition, committed in offsets.items():
            marks, times = per_partition.setdefault(int(partition), ([], []))
            if not marks or committed > marks[-1]:
                marks.append(committed)
                times.append(seen_at)
    out: list[float | None] = []
    for partition, offset, _, _ in sent:
        marks, times = per_partition.get(partition, ([], []))
        i = bisect.bisect_right(marks, offset)
        out.append(times[i] if i < len(marks) else None)
    return out


def phase_figures(sent: Sequence[Sent], seen: Sequence[float | None]) -> dict:
    """Latencies (ms) of one phase: publish-to-searchable, send-to-acknowledgement, and the
    publishing rate achieved."""
    latencies = [s - send for (_, _, send, _), s in zip(sent, seen, strict=True) if s is not None]
    sends = [send for _, _, send, _ in sent]
    duration = max(sends) - min(sends) if len(sends) > 1 else 0.0
    return {"published": len(sent), "never_seen": sum(s is None for s in seen),
            "rate_achieved": (len(sent) - 1) / duration if duration > 0 else None,
            "searchable": latency_summary(latencies),
            "acknowledged": latency_summary([ack - send for _, _, send, ack in sent])}


def relisting(k: int) -> ListingUpsert:
    """The ``k``-th relisting of the seed: its text plus a unique suffix, a new id."""
    return ListingUpsert(id=f"{SEED_ID}-relist-{k}", title=SEED_TITLE,
                         description=f"{SEED_DESCRIPTION} Lot {k}.")


def with_relistings(messages: Sequence[tuple[bytes, bytes]], every: int, start: int
                    ) -> tuple[list[tuple[bytes, bytes]], dict[int, str]]:
    """``messages`` with every ``every``-th one replaced by a relisting of the seed (numbered
    from ``start``); the relistings' positions in the list and their ids."""
    out = list(messages)
    relisted: dict[int, str] = {}
    for n, i in enumerate(range(every - 1, len(out), every)):
        listing = relisting(start + n)
        out[i] = (LISTINGS.key(listing).encode(), encode(listing))
        relisted[i] = listing.id
    return out, relisted


def _median_ms(seconds: Sequence[float]) -> float | None:
    return statistics.median(seconds) * 1000 if seconds else None


def standing_figures(sent: Sequence[Sent], seen: Sequence[float | None],
                     relisted: Mapping[int, str], detected: Mapping[str, float]) -> dict:
    """Latencies (ms) of one standing phase: each relisting's publish to its first standing
    detection received, and publish to searchable of the same relistings (its ceiling); the
    pace the relistings were detected at, in listings of the phase a second (a least-squares
    fit of detection time against position); the phase's figures as
    :func:`phase_figures` has them for every listing. ``relisted``: position in ``sent`` ->
    listing id."""
    detections, searchable, after = [], [], []
    never = 0
    spanned: list[tuple[int, float]] = []  # (position, detected) of the relistings detected
    for i, listing_id in sorted(relisted.items()):
        send, found, seen_at = sent[i][2], detected.get(listing_id), seen[i]
        if found is None:
            never += 1
            continue
        spanned.append((i, found))
        detections.append(found - send)
        if seen_at is not None:
            searchable.append(seen_at - send)
            after.append(found - seen_at)
    pace = None
    if len({i for i, _ in spanned}) > 1:
        # detection time against position in the phase, least squares: seconds a listing
        # (the watcher's pace; the publishing rate when it keeps up)
        slope = statistics.linear_regression([float(i) for i, _ in spanned],
                                             [at for _, at in spanned]).slope
        pace = 1 / slope if slope > 0 else None
    return {**phase_figures(sent, seen), "relistings": len(relisted), "never_detected": never,
            "matched_rate": pace,
            # a backlog shows as latencies growing through the phase
            "detected_first_tenth_ms": _median_ms(detections[:max(1, len(detections) // 10)]),
            "detected_last_tenth_ms": _median_ms(detections[-max(1, len(detections) // 10):]),
            "detected": latency_summary(detections),
            "relistings_searchable": latency_summary(searchable),
            "searchable_to_detected": latency_summary(after)}


def worker_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict:
    """What the worker's /metrics counted between two scrapes (``scraped_at``: when, epoch
    seconds): index commits (and a second), listings the watcher matched, its passes
    (``watch_wait_index`` samples) with their mean wait for the index and search, and its own
    listing-to-detection mean ({} without a scrape)."""
    if not all("qexplorer_index_commits_total" in m for m in (before, after)):
        return {}

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    seconds = delta("scraped_at")
    commits = delta("qexplorer_index_commits_total")
    out: dict = {"seconds": seconds, "commits": int(commits),
                 "commits_per_s": commits / seconds if seconds > 0 else None,
                 "listings_matched": int(delta("qexplorer_standing_listings_total")),
                 "detections": int(delta("qexplorer_standing_detections_total"))}
    for stage in ("watch_wait_index", "watch_search", "listing_to_detection"):
        count = delta(f'qexplorer_latency_seconds_count{{stage="{stage}"}}')
        total = delta(f'qexplorer_latency_seconds_sum{{stage="{stage}"}}')
        out[stage] = {"count": int(count), "mean_ms": 1000 * total / count if count else None}
    return out


def standing_report(per_rate: Mapping[int, Sequence[dict]], *, phase_s: float, every: int,
                    unrelated: int, window_s: float, interval_s: float, batch: int,
                    worker: Mapping[str, dict], published_before: int = 0
                    ) -> tuple[list[dict], list[str]]:
    """The standing phases' rows (per rate: publish to standing detection p50/p95/p99 against
    publish to searchable of the same relistings; the pace relistings were detected at
    against the publishing rate; relistings never detected) and notes. ``unrelated``:
    listings other than the relistings a standing query matched; ``worker``: what the worker
    counted (:func:`worker_delta`) in the ``phases`` and in the ``standing`` phases;
    ``published_before``: listings the ``phases`` published."""
    rows, notes = [], []
    for rate, phases in per_rate.items():
        done = [p for p in phases if p["detected"]["n"] and p["relistings_searchable"]["n"]]
        for q in ("p50", "p95", "p99"):
            if done:
                rows.append(comparison(
                    "freshness", f"{rate:,}/s: publish to standing detection, {q}", "ms",
                    [p["detected"][f"{q}_ms"] for p in done],
                    ceiling=[p["relistings_searchable"][f"{q}_ms"] for p in done],
                    ceiling_name="publish to searchable, same relistings", better="lower"))
        paced = [p for p in phases if p["matched_rate"]]
        if paced:
            rows.append(comparison(
                "freshness", f"{rate:,}/s: pace of the standing detections (listings/s)", "/s",
                [p["matched_rate"] for p in paced],
                ceiling=[p["rate_achieved"] or 0.0 for p in paced],
                ceiling_name="publishing rate achieved"))
        rows.append(comparison(
            "freshness", f"{rate:,}/s: relistings never detected by a standing query", "count",
            [float(p["never_detected"]) for p in phases], better="lower"))
        never = sum(p["never_detected"] for p in phases)
        after = [p["searchable_to_detected"]["p50_ms"] for p in done
                 if p["searchable_to_detected"]["n"]]
        searchable = [p["searchable"] for p in phases if p["searchable"]["n"]]
        first = [p["detected_first_tenth_ms"] for p in done]
        last = [p["detected_last_tenth_ms"] for p in done]
        notes.append(
            f"{rate:,}/s with standing queries: {sum(p['published'] for p in phases):,} "
            f"listings over {len(phases)} phases of {phase_s:g} s, 1 in {every} a relisting "
            f"of the seed ({sum(p['relistings'] for p in phases):,}); "
            + (f"{never} NEVER DETECTED" if never else "every one detected (0 never detected)")
            + (f"; publish to detection p50 of the phase's first tenth of relistings "
               f"{statistics.median(first):.0f} ms, of its last tenth "
               f"{statistics.median(last):.0f} ms" if done else "")
            + (f"; searchable to detected p50 {statistics.median(after):.0f} ms" if after
               else "")
            + (f"; publish to searchable of all the phase's listings p50 "
               f"{statistics.median(s['p50_ms'] for s in searchable):.0f} ms, p95 "
               f"{statistics.median(s['p95_ms'] for s in searchable):.0f} ms"
               if searchable else ""))
    regular, standing = worker.get("phases") or {}, worker.get("standing") or {}
    if standing:
        wait, search = standing["watch_wait_index"], standing["watch_search"]
        own = standing["listing_to_detection"]
        notes.append(
            f"the worker's /metrics over the standing phases: {standing['listings_matched']:,} "
            f"listings matched in {wait['count']:,} watcher passes (batches of up to {batch:,}, "
            f"a fetch waiting at most {window_s:g} s, QEXPLORER_STANDING_BATCH_WITHIN_S), "
            f"each waiting {wait['mean_ms'] or 0:.0f} ms on average for its listings to be "
            f"searchable and searching {search['mean_ms'] or 0:.1f} ms ("
            f"{wait['count'] * ((wait['mean_ms'] or 0) + (search['mean_ms'] or 0)) / 1000:.1f}"
            f" s in all over {standing['seconds']:.0f} s); its own "
            f"listing-to-detection mean {own['mean_ms'] or 0:.0f} ms over {own['count']:,} "
            f"detections; {standing['commits_per_s'] or 0:.1f} index commits a second"
            + (f" ({regular['commits_per_s'] or 0:.1f} in the phases without standing queries)"
               if regular else "")
            + f" (the watcher waits for the regular commit, every {interval_s:g} s)")
    if regular and published_before:
        taken = regular["listings_matched"]
        notes.append(f"the watcher (its consumer on listings) had taken in {taken:,} of the "
                     f"{published_before:,} listings of the phases without standing queries "
                     f"when the last was searchable (and {2 * interval_s:g} s more)"
                     + (": it took them in slower than the replica indexed them, with no "
                        "query to match" if taken < published_before else ""))
    notes.append(f"standing detections received by a follower process reading the detections "
                 f"topic; listings other than relistings matched: {unrelated}")
    return rows, notes


# --- publishing ------------------------------------------------------------------------------


async def _publish_at(producer: AIOKafkaProducer, topic: str,
                      messages: Sequence[tuple[bytes, bytes]], rate: float) -> list[Sent]:
    """Send pre-encoded (key, value) messages paced at ``rate`` per second; wait for every
    acknowledgement; return what was sent where and when."""
    send_times: list[float] = [0.0] * len(messages)
    acks: list[tuple[int, int, float] | None] = [None] * len(messages)

    def acked(i: int, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is None:
            meta = future.result()
            acks[i] = (meta.partition, meta.offset, time.time())

    futures = []
    started = time.perf_counter()
    sent = 0
    while sent < len(messages):
        due = min(len(messages), int((time.perf_counter() - started) * rate) + 1)
        while sent < due:
            key, value = messages[sent]
            send_times[sent] = time.time()
            future = await producer.send(topic, value=value, key=key)
            future.add_done_callback(lambda f, i=sent: acked(i, f))
            futures.append(future)
            sent += 1
        await asyncio.sleep(0.001)
    await asyncio.gather(*futures)
    await asyncio.sleep(0)  # let the last callbacks run
    return [(a[0], a[1], send_times[i], a[2]) for i, a in enumerate(acks) if a is not None]


async def _wait_searchable(reader: TantivyIndex, topic: str, sent: Sequence[Sent],
                           timeout_s: float, check: Callable[[], None]) -> None:
    need: dict[int, int] = {}
    for partition, offset, _, _ in sent:
        need[partition] = max(need.get(partition, 0), offset + 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reader.reload()
        committed = reader.committed_offsets().get(topic, {})
        if all(committed.get(p, 0) >= o for p, o in need.items()):
            return
        check()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the worker did not make the listings searchable in {timeout_s}s")


async def _phases(settings: Settings, reader: TantivyIndex,
                  plan: Sequence[tuple[float, list[tuple[bytes, bytes]]]],
                  progress: Callable[[str], None], check: Callable[[], None]
                  ) -> list[list[Sent]]:
    topic = settings.topics.listings
    producer = clients.producer(settings.kafka)
    await producer.start()
    try:
        out = []
        for phase, (rate, messages) in enumerate(plan):
            sent = await _publish_at(producer, topic, messages, rate)
            await _wait_searchable(reader, topic, sent, timeout_s=120, check=check)
            await asyncio.sleep(2 * settings.index.commit_interval_s)  # a quiet gap
            out.append(sent)
            progress(f"freshness: {'warm-up: ' if phase == 0 else ''}{len(sent):,} listings "
                     f"at {rate:,.0f}/s searchable")
        return out
    finally:
        await producer.stop()


async def _drain(follower: DetectionFollower) -> None:
    """Keep the follower's pipe empty (a full pipe would hold its receive times back)."""
    while True:
        follower.drain()
        await asyncio.sleep(0.05)


async def _wait_detected(follower: DetectionFollower, ids: Sequence[str], timeout_s: float,
                         check: Callable[[], None]) -> int:
    """Wait until every listing of ``ids`` has a standing detection; the number still
    missing at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = follower.drain()
        missing = sum(i not in found for i in ids)
        if not missing or time.monotonic() >= deadline:
            return missing
        check()
        await asyncio.sleep(0.05)


async def _explore_seed(settings: Settings, producer: AIOKafkaProducer, reader: TantivyIndex,
                        follower: DetectionFollower, check: Callable[[], None]) -> dict:
    """Publish the seed (after its copies), confirm it as toxic, wait for its standing
    queries and for the detection of a probe relisting in every partition; what it took."""
    topics = settings.topics
    copies = [ListingUpsert(id=f"{SEED_ID}-copy-{k}", title=SEED_TITLE,
                            description=f"{SEED_DESCRIPTION} Copy {k}.")
              for k in range(SEED_COPIES)]
    copies.append(ListingUpsert(id=SEED_ID, title=SEED_TITLE, description=SEED_DESCRIPTION))
    sent = await _publish_at(producer, topics.listings,
                             [(LISTINGS.key(c).encode(), encode(c)) for c in copies], 1_000.0)
    await _wait_searchable(reader, topics.listings, sent, timeout_s=120, check=check)
    started = time.monotonic()
    seed = ToxicItem(id=SEED_ID, title=SEED_TITLE, description=SEED_DESCRIPTION,
                     confirmed_by="bench.freshness")
    await producer.send_and_wait(topics.toxic_items, key=TOXIC_ITEMS.key(seed).encode(),
                                 value=encode(seed))
    queries: list[dict] = []
    while not queries:
        if time.monotonic() - started > 180:
            raise TimeoutError("the worker made no standing query of the seed in 180 s")
        check()
        await asyncio.sleep(0.5)
        queries = [q for q in (orjson.loads(m.value) for m in
                               await read_to_end(settings.kafka, topics.standing))
                   if q["seed_id"] == SEED_ID]
    explored_s = time.monotonic() - started
    # a probe relisting in every partition: once all are detected, the watcher has caught up
    # with what the phases before published
    probes = [ListingUpsert(id=f"{SEED_ID}-probe-{p}", title=SEED_TITLE,
                            description=f"{SEED_DESCRIPTION} Probe {p}.")
              for p in range(topics.partitions(LISTINGS))]
    send = time.time()
    await asyncio.gather(*[await producer.send(topics.listings, key=LISTINGS.key(probe).encode(),
                                               value=encode(probe), partition=p)
                           for p, probe in enumerate(probes)])
    if await _wait_detected(follower, [p.id for p in probes], DETECT_TIMEOUT_S, check):
        raise TimeoutError(f"the probe relistings of the seed were not detected in "
                           f"{DETECT_TIMEOUT_S:.0f} s")
    caught_up = max(follower.first[p.id] for p in probes) - send
    return {"explored_s": explored_s, "probe_ms": caught_up * 1000,
            "queries": [{"query": q["query"], "min_score": q["min_score"],
                         "results": q["results"]} for q in queries]}


async def _standing_phases(settings: Settings, reader: TantivyIndex,
                           follower: DetectionFollower,
                           plan: Sequence[tuple[float, list[tuple[bytes, bytes]], dict[int, str]]],
                           progress: Callable[[str], None], check: Callable[[], None]
                           ) -> tuple[dict, list[list[Sent]]]:
    topic = settings.topics.listings
    producer = clients.producer(settings.kafka)
    await producer.start()
    drain = asyncio.ensure_future(_drain(follower))
    try:
        seed = await _explore_seed(settings, producer, reader, follower, check)
        progress(f"freshness: the seed's {len(seed['queries'])} standing queries took "
                 f"{seed['explored_s']:.1f} s; probe relistings were detected in "
                 f"{seed['probe_ms']:.0f} ms")
        out = []
        for rate, messages, relisted in plan:
            sent = await _publish_at(producer, topic, messages, rate)
            if len(sent) != len(messages):
                raise RuntimeError(f"{len(messages) - len(sent)} listings were not acknowledged")
            await _wait_searchable(reader, topic, sent, timeout_s=120, check=check)
            missing = await _wait_detected(follower, list(relisted.values()), DETECT_TIMEOUT_S,
                                           check)
            await asyncio.sleep(2 * settings.index.commit_interval_s)  # a quiet gap
            out.append(sent)
            progress(f"freshness: {len(sent):,} listings at {rate:,.0f}/s with "
                     f"{len(relisted):,} relistings of the seed, "
                     f"{len(relisted) - missing:,} detected")
        return seed, out
    finally:
        drain.cancel()
        await producer.stop()


async def _all_phases(settings: Settings, reader: TantivyIndex,
                      plan: Sequence[tuple[float, list[tuple[bytes, bytes]]]],
                      standing_plan: Sequence[tuple[float, list[tuple[bytes, bytes]],
                                                    dict[int, str]]],
                      follower: DetectionFollower | None, progress: Callable[[str], None],
                      check: Callable[[], None], metrics: Callable[[], dict[str, float]]
                      ) -> tuple[list[list[Sent]], dict | None, list[list[Sent]],
                                 list[dict[str, float]]]:
    """The phases, then the standing phases; the worker's metrics before the first, between
    them and after the last."""
    scraped = [metrics()]
    deadline = time.monotonic() + 30
    while "qexplorer_index_commits_total" not in scraped[0] and time.monotonic() < deadline:
        await asyncio.sleep(0.2)  # the worker's endpoint and replica are still starting
        scraped[0] = metrics()
    sent = await _phases(settings, reader, plan, progress, check)
    scraped.append(metrics())
    if follower is None or not standing_plan:
        return sent, None, [], scraped
    seed, standing = await _standing_phases(settings, reader, follower, standing_plan,
                                            progress, check)
    scraped.append(metrics())
    return sent, seed, standing, scraped


# --- the benchmark ---------------------------------------------------------------------------


def run(settings: Settings, *, repeats: int, log_dir: Path, rates: Sequence[int] = RATES,
        phase_s: float = PHASE_S, poll_s: float = POLL_S,
        standing_phase_s: float | None = None, relist_every: int = RELIST_EVERY,
        progress: Callable[[str], None] = print) -> dict:
    """Publish at each rate for ``phase_s`` per repeat into one running worker; return the
    report section (rows per rate: p50/p95/p99 against the commit interval, rate achieved).
    Then, unless ``standing_phase_s`` is 0 or the standing queries are disabled, the standing
    phases (``standing_phase_s``, by default half of ``phase_s``): publish to standing
    detection p50/p95/p99 against publish to searchable of the same relistings."""
    standing_s = phase_s / 2 if standing_phase_s is None else standing_phase_s
    if not settings.standing.enabled:
        standing_s = 0.0
    base = synthetic_listings(20_000, seed=2)
    total = WARMUP + sum(int(rate * phase_s) + int(rate * standing_s)
                         for rate in rates) * repeats
    listings = renamed(base, total, "f")
    encoded = [(LISTINGS.key(item).encode(), encode(item)) for item in listings]
    plan: list[tuple[float, list[tuple[bytes, bytes]]]] = [(1_000.0, encoded[:WARMUP])]
    labels: list[tuple[int, int]] = []
    at = WARMUP
    for repeat in range(repeats):
        for rate in rates:
            count = int(rate * phase_s)
            plan.append((float(rate), encoded[at:at + count]))
            labels.append((rate, repeat))
            at += count
    standing_plan: list[tuple[float, list[tuple[bytes, bytes]], dict[int, str]]] = []
    relistings = 0
    for _ in range(repeats if standing_s > 0 else 0):
        for rate in rates:
            count = int(rate * standing_s)
            messages, relisted = with_relistings(encoded[at:at + count], relist_every,
                                                 relistings)
            standing_plan.append((float(rate), messages, relisted))
            relistings += len(relisted)
            at += count
    with BenchCluster(settings, "freshness", log_dir, metrics={"port": free_port()}) as cluster:
        worker_settings = cluster.worker_settings("w")
        cluster.start_worker("w")
        reader = cluster.reader("w")
        follower = DetectionFollower(cluster.settings.kafka,
                                     cluster.settings.topics.detections) if standing_plan else None
        with Poller(cluster.index_dir("w"), worker_settings.topics.listings, poll_s) as poller, \
                follower or contextlib.nullcontext():
            sent_phases, seed, standing_sent, scraped = asyncio.run(_all_phases(
                cluster.settings, reader, plan, standing_plan, follower, progress,
                lambda: cluster.check_alive("w"),
                lambda: {**scrape(worker_settings.metrics.host, worker_settings.metrics.port),
                         "scraped_at": time.time()}))
            sent_phases = sent_phases[1:]
        cluster.check_alive("w")
    timeline = poller.result.get("timeline", [])
    per_rate: dict[int, list[dict]] = {rate: [] for rate in rates}
    for (rate, _), sent in zip(labels, sent_phases, strict=True):
        per_rate[rate].append(phase_figures(sent, searchable_at(timeline, sent)))
    standing_per_rate: dict[int, list[dict]] = {rate: [] for rate in rates} if seed else {}
    for (rate, _, relisted), sent in zip(standing_plan, standing_sent, strict=True):
        assert follower is not None
        standing_per_rate[int(rate)].append(standing_figures(
            sent, searchable_at(timeline, sent), relisted, follower.first))
    interval_ms = worker_settings.index.commit_interval_s * 1000
    rows, notes = [], []
    for rate, phases in per_rate.items():
        done = [p for p in phases if p["searchable"]["n"]]
        if len(done) < len(phases):
            raise RuntimeError(f"at {rate}/s {len(phases) - len(done)} phases saw no listing "
                               "become searchable (poller timeline empty?)")
        for q in ("p50", "p95", "p99"):
            rows.append(comparison(
                "freshness", f"{rate:,}/s: publish to searchable, {q}", "ms",
                [p["searchable"][f"{q}_ms"] for p in done],
                ceiling=[interval_ms] * len(done), ceiling_name="commit interval",
                better="lower"))
        rows.append(comparison(
            "freshness", f"{rate:,}/s: publishing rate achieved", "/s",
            [p["rate_achieved"] or 0.0 for p in phases], ceiling=[float(rate)] * len(phases),
            ceiling_name="target rate"))
        ack = statistics.median(p["acknowledged"]["p50_ms"] for p in phases)
        never = sum(p["never_seen"] for p in phases)
        notes.append(f"{rate:,}/s: {sum(p['published'] for p in phases):,} listings over "
                     f"{len(phases)} phases of {phase_s:.0f} s; send-to-ack p50 {ack:.1f} ms"
                     + (f"; {never} never seen searchable" if never else ""))
    worker = {"phases": worker_delta(*scraped[:2]),
              "standing": worker_delta(*scraped[1:3]) if len(scraped) > 2 else {}}
    if seed is not None:
        assert follower is not None
        extra_rows, extra_notes = standing_report(
            standing_per_rate, phase_s=standing_s, every=relist_every,
            unrelated=sum(not i.startswith((f"{SEED_ID}-relist-", f"{SEED_ID}-probe-"))
                          for i in follower.first),
            window_s=worker_settings.standing.batch_within_s,
            interval_s=worker_settings.index.commit_interval_s,
            batch=worker_settings.standing.batch, worker=worker,
            published_before=sum(len(messages) for _, messages in plan))
        rows += extra_rows
        notes += extra_notes
        notes.append(f"the seed: {len(seed['queries'])} standing queries ("
                     + ", ".join(f"'{q['query']}'" for q in seed["queries"])
                     + f") on the broker {seed['explored_s']:.1f} s after it was confirmed; "
                     f"a probe relisting in each partition, all detected "
                     f"{seed['probe_ms']:.0f} ms after they were sent")
    cost = poller.result.get("cost_ms", {})
    notes.append(f"worker commit policy: every {worker_settings.index.commit_interval_s} s or "
                 f"{worker_settings.index.commit_docs:,} listings; poller every "
                 f"{poll_s * 1000:.0f} ms in its own process, {poller.result.get('polls', 0):,} "
                 f"polls costing {cost.get('mean') or 0:.2f} ms mean, "
                 f"{cost.get('p99') or 0:.2f} ms p99 (resolution ~ interval + cost)")
    return {"params": {"rates": list(rates), "phase_s": phase_s, "repeats": repeats,
                       "poll_s": poll_s,
                       "index_commit_interval_s": worker_settings.index.commit_interval_s,
                       "index_commit_docs": worker_settings.index.commit_docs,
                       "standing_phase_s": standing_s, "relist_every": relist_every,
                       "standing_batch_within_s": worker_settings.standing.batch_within_s},
            "rows": rows, "notes": notes,
            "details": {"phases": {str(rate): phases for rate, phases in per_rate.items()},
                        "standing": None if seed is None else {
                            "seed": seed,
                            "phases": {str(r): p for r, p in standing_per_rate.items()},
                            "detections_received": follower.received if follower else 0},
                        "worker_metrics": worker,
                        "poller": {k: v for k, v in poller.result.items() if k != "timeline"},
                        "commits_seen": len(timeline)}}


def main() -> None:
    """Run the freshness benchmark alone; write ``freshness.json`` and ``freshness.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phase-s", type=float, default=PHASE_S)
    parser.add_argument("--rates", default=",".join(map(str, RATES)))
    parser.add_argument("--standing-phase-s", type=float, default=None,
                        help="length of the standing phases (default: half of --phase-s; "
                             "0: none)")
    parser.add_argument("--relist-every", type=int, default=RELIST_EVERY)
    parser.add_argument("--out", type=Path, default=Path(".cache/bench"))
    args = parser.parse_args()
    started = time.time()
    section = run(Settings(), repeats=args.repeats, log_dir=args.out / "logs",
                  rates=[int(r) for r in args.rates.split(",")], phase_s=args.phase_s,
                  standing_phase_s=args.standing_phase_s, relist_every=args.relist_every)
    report = write_report(args.out, "freshness", {
        "params": {"repeats": args.repeats}, "benchmarks": {"freshness": section}},
        started=started, render=markdown)
    print(markdown(report))


if __name__ == "__main__":
    main()
