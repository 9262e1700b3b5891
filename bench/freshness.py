"""Freshness: how long after a listing is published it becomes searchable, at a steady rate.

A worker consumes the ``listings`` topic while this process publishes new listings at a fixed
rate (200/s and 5,000/s by default) for ``phase_s`` seconds per repeat. The worker stores the
Kafka offsets inside each index commit (``SearchIndex.committed_offsets()``), so listing
(partition p, offset o) is searchable from the first commit whose offset for p exceeds o. A
separate poller process opens the worker's index read-only and reloads it every
``poll_s`` (10 ms), recording when each new commit became visible; its own cost per poll is
reported. Latency = first poll that saw the commit - the send time of the listing (the
record's CreateTime, taken just before ``producer.send``; the send-to-acknowledgement time is
reported too). The producer is configured as ``streams.client.publish`` (acks=all,
linger 5 ms).

The ceiling for context is the worker's commit interval (``QEXPLORER_INDEX_COMMIT_INTERVAL_S``):
a listing waits on average half of it for the next commit, and the commit itself takes time.

Usage: ``.venv/bin/python -m bench.freshness --repeats 3 --out .cache/bench`` (broker
running); part of ``qexplorer bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import multiprocessing
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from bench.common import BenchCluster, machine, open_view, renamed, synthetic_listings
from bench.report import comparison, latency_summary, markdown, percentile
from config import Settings
from schemas.codec import encode
from schemas.topics import LISTINGS
from search.tantivy_index import TantivyIndex

RATES = (200, 5_000)
PHASE_S = 10.0
POLL_S = 0.01
WARMUP = 500

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
    producer = AIOKafkaProducer(**settings.kafka.client_kwargs(), acks="all", linger_ms=5,
                                max_batch_size=256 * 1024)
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


# --- the benchmark ---------------------------------------------------------------------------


def run(settings: Settings, *, repeats: int, log_dir: Path, rates: Sequence[int] = RATES,
        phase_s: float = PHASE_S, poll_s: float = POLL_S,
        progress: Callable[[str], None] = print) -> dict:
    """Publish at each rate for ``phase_s`` per repeat into one running worker; return the
    report section (rows per rate: p50/p95/p99 against the commit interval, rate achieved)."""
    base = synthetic_listings(20_000, seed=2)
    total = WARMUP + sum(int(rate * phase_s) for rate in rates) * repeats
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
    with BenchCluster(settings, "freshness", log_dir) as cluster:
        worker_settings = cluster.worker_settings("w")
        cluster.start_worker("w")
        reader = cluster.reader("w")
        with Poller(cluster.index_dir("w"), worker_settings.topics.listings, poll_s) as poller:
            sent_phases = asyncio.run(_phases(cluster.settings, reader, plan, progress,
                                              lambda: cluster.check_alive("w")))[1:]
        cluster.check_alive("w")
    timeline = poller.result.get("timeline", [])
    per_rate: dict[int, list[dict]] = {rate: [] for rate in rates}
    for (rate, _), sent in zip(labels, sent_phases, strict=True):
        per_rate[rate].append(phase_figures(sent, searchable_at(timeline, sent)))
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
    cost = poller.result.get("cost_ms", {})
    notes.append(f"worker commit policy: every {worker_settings.index.commit_interval_s} s or "
                 f"{worker_settings.index.commit_docs:,} listings; poller every "
                 f"{poll_s * 1000:.0f} ms in its own process, {poller.result.get('polls', 0):,} "
                 f"polls costing {cost.get('mean') or 0:.2f} ms mean, "
                 f"{cost.get('p99') or 0:.2f} ms p99 (resolution ~ interval + cost)")
    return {"params": {"rates": list(rates), "phase_s": phase_s, "repeats": repeats,
                       "poll_s": poll_s,
                       "index_commit_interval_s": worker_settings.index.commit_interval_s,
                       "index_commit_docs": worker_settings.index.commit_docs},
            "rows": rows, "notes": notes,
            "details": {"phases": {str(rate): phases for rate, phases in per_rate.items()},
                        "poller": {k: v for k, v in poller.result.items() if k != "timeline"},
                        "commits_seen": len(timeline)}}


def main() -> None:
    """Run the freshness benchmark alone; write ``freshness.json`` and ``freshness.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phase-s", type=float, default=PHASE_S)
    parser.add_argument("--rates", default=",".join(map(str, RATES)))
    parser.add_argument("--out", type=Path, default=Path(".cache/bench"))
    args = parser.parse_args()
    started = time.time()
    section = run(Settings(), repeats=args.repeats, log_dir=args.out / "logs",
                  rates=[int(r) for r in args.rates.split(",")], phase_s=args.phase_s)
    report = {"command": "python -m bench.freshness", "started_at": time.ctime(started),
              "duration_s": time.time() - started, "machine": machine(),
              "params": {"repeats": args.repeats}, "benchmarks": {"freshness": section}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "freshness.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    (args.out / "freshness.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
