"""Soak: a worker under a steady marketplace stream for ten minutes or more, sampled over time.

A real worker (keywords extractor) consumes what a busy marketplace publishes: new listings at
``--rate`` a second, the same number of deletions of listings older than ``--live`` (listings
expire, so the live set, and with it the index, stops growing once the window is full), and
confirmed toxic items at ``--seed-rate`` a second. Every ``--every`` seconds the benchmark
scrapes the worker's ``/metrics`` and reads its resident memory from /proc:

- consumer lag of the replica (listings not yet searchable) and of the explorer (seeds waiting);
- resident memory (RSS) of the worker process;
- seed-to-detection latency p50/p95 over the interval (from the worker's histogram);
- listings in the index and achieved publishing rates.

It passes when lag and memory stay bounded: lag returns to near zero after each sample, and
memory in the last third of the run grows by less than ``--rss-slack`` over the middle third.
Writes ``soak.json`` (every sample) and ``soak.png`` (the chart).

Usage: ``.venv/bin/python -m bench.soak --minutes 10 --out .cache/bench`` (broker running).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.common import BenchCluster, free_port, synthetic_items, write_report
from qexplorer.config import KafkaSettings, Settings
from qexplorer.kafka import clients
from qexplorer.marketplace.items import to_listing_dict, to_toxic_dict
from qexplorer.marketplace.synthetic import split_seeds
from schemas.codec import encode
from schemas.models import ListingDelete, ListingUpsert, ToxicItem
from schemas.topics import LISTINGS, TOXIC_ITEMS, Topics


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """The worker's metrics as {(sample name, sorted labels): value}."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def histogram_quantile(q: float, before: dict, after: dict, stage: str) -> float | None:
    """The q-quantile of a latency histogram's observations between two scrapes (linear
    interpolation inside the bucket, like Prometheus' histogram_quantile)."""
    def buckets(m: dict) -> list[tuple[float, float]]:
        out = [(float(dict(labels)["le"]), value) for (name, labels), value in m.items()
               if name == "qexplorer_latency_seconds_bucket" and dict(labels)["stage"] == stage]
        return sorted(out)
    now, then = buckets(after), dict(buckets(before))
    counts = [(le, value - then.get(le, 0.0)) for le, value in now]
    if not counts or counts[-1][1] <= 0:
        return None
    rank, lower, below = q * counts[-1][1], 0.0, 0.0
    for le, cumulative in counts:
        if cumulative >= rank:
            if le == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = le, cumulative
    return lower


async def _publish(kafka: KafkaSettings, topics: Topics, listings, seeds, rate: float,
                   seed_rate: float, live: int, seconds: float, sent: dict) -> None:
    """Publish at steady rates for ``seconds``, in 100 ms ticks (records keyed as the topic
    registry says)."""
    producer = clients.producer(kafka, max_batch_size=512 * 1024)
    await producer.start()
    rng = random.Random(3)
    try:
        started, tick, n, s = time.monotonic(), 0, 0, 0
        while time.monotonic() - started < seconds:
            tick += 1
            target = int(rate * tick / 10)
            while n < target:
                base = listings[n % len(listings)]
                listing = base.model_copy(update={"id": f"{base.id}-s{n}"})
                await producer.send(topics.listings, key=LISTINGS.key(listing).encode(),
                                    value=encode(listing))
                if n >= live:  # the listing published `live` ago expires
                    old = listings[(n - live) % len(listings)]
                    gone = ListingDelete(id=f"{old.id}-s{n - live}")
                    await producer.send(topics.listings, key=LISTINGS.key(gone).encode(),
                                        value=encode(gone))
                    sent["deletes"] += 1
                n += 1
            while s < int(seed_rate * tick / 10):
                seed = seeds[rng.randrange(len(seeds))]
                item = ToxicItem(**{**to_toxic_dict(seed, "soak"), "id": f"{seed.id}-s{s}"})
                await producer.send(topics.toxic_items, key=TOXIC_ITEMS.key(item).encode(),
                                    value=encode(item))
                s += 1
            sent["listings"], sent["seeds"] = n, s
            await asyncio.sleep(max(0.0, tick / 10 - (time.monotonic() - started)))
        await producer.flush()
    finally:
        await producer.stop()


async def _sample(cluster: BenchCluster, port: int, pid: int, every: float, seconds: float,
                  sent: dict, samples: list) -> None:
    started = time.monotonic()
    previous = scrape(port)
    while time.monotonic() - started < seconds + every:
        await asyncio.sleep(every)
        cluster.check_alive("w1")
        metrics = scrape(port)
        lag = {"/".join(v for _, v in labels): value for (name, labels), value in metrics.items()
               if name == "qexplorer_consumer_lag"}
        samples.append({
            "t": round(time.monotonic() - started, 1), "rss_bytes": _rss(pid),
            "index_documents": metrics.get(("qexplorer_index_documents", ()), 0),
            "listings_indexed": metrics.get(("qexplorer_listings_indexed_total", ()), 0),
            "seeds_explored": metrics.get(("qexplorer_seeds_explored_total", ()), 0),
            "lag_listings": lag.get("replica/listings"),
            "lag_seeds": lag.get("explorer/toxic-items"),
            "seed_to_detection_p50_s": histogram_quantile(0.5, previous, metrics,
                                                          "seed_to_detection"),
            "seed_to_detection_p95_s": histogram_quantile(0.95, previous, metrics,
                                                          "seed_to_detection"),
            "published": dict(sent),
        })
        previous = metrics
        last = samples[-1]
        print(f"t={last['t']:6.0f}s rss={last['rss_bytes'] / 2**20:7.1f} MiB "
              f"docs={last['index_documents']:8.0f} lag={last['lag_listings']}/"
              f"{last['lag_seeds']} p95={last['seed_to_detection_p95_s']}", flush=True)


def verdict(samples: list[dict], rss_slack: float, rate: float) -> dict:
    """Bounded lag and memory, from the samples: memory in the last third grows less than
    ``rss_slack`` over the middle third's median, and lag does not grow (its maximum in the
    last third stays within 1.5 times the earlier maximum plus one second of publishing)."""
    n = len(samples)
    third = max(1, n // 3)
    middle = [s["rss_bytes"] for s in samples[third:2 * third]] or [samples[0]["rss_bytes"]]
    last = [s["rss_bytes"] for s in samples[2 * third:]] or middle
    lags = [s["lag_listings"] or 0 for s in samples]
    earlier, later = max(lags[:2 * third] or [0]), max(lags[2 * third:] or [0])
    p95 = [s["seed_to_detection_p95_s"] for s in samples if s["seed_to_detection_p95_s"]]
    growth = max(last) / statistics.median(middle) - 1
    return {
        "rss_mib": {"start": samples[0]["rss_bytes"] / 2**20, "max": max(
            s["rss_bytes"] for s in samples) / 2**20, "end": samples[-1]["rss_bytes"] / 2**20},
        "rss_growth_last_third": growth,
        "lag_listings": {"median": statistics.median(lags), "max": max(lags)},
        "lag_seeds_max": max(s["lag_seeds"] or 0 for s in samples),
        "seed_to_detection_p95_s": {"median": statistics.median(p95) if p95 else None,
                                    "max": max(p95) if p95 else None},
        "lag_bounded": later <= 1.5 * earlier + rate,
        "memory_bounded": growth < rss_slack,
    }


def chart(samples: list[dict], path: Path) -> None:
    """Lag, memory and latency over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    axes[0].plot(t, [s["lag_listings"] or 0 for s in samples], label="listings not searchable")
    axes[0].plot(t, [s["lag_seeds"] or 0 for s in samples], label="seeds waiting")
    axes[0].set_ylabel("consumer lag (messages)")
    axes[0].legend()
    axes[1].plot(t, [s["rss_bytes"] / 2**20 for s in samples], color="tab:red")
    axes[1].set_ylabel("worker RSS (MiB)")
    ax2 = axes[1].twinx()
    ax2.plot(t, [s["index_documents"] / 1000 for s in samples], color="tab:gray", ls="--")
    ax2.set_ylabel("listings in index (k, dashed)")
    for key, label in (("seed_to_detection_p50_s", "p50"), ("seed_to_detection_p95_s", "p95")):
        axes[2].plot(t, [(s[key] or 0) * 1000 for s in samples], label=label)
    axes[2].set_ylabel("seed→detection (ms)")
    axes[2].set_xlabel("minutes")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    """Run the soak and write ``soak.json`` and ``soak.png``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="new listings a second")
    parser.add_argument("--seed-rate", type=float, default=2.0, help="confirmations a second")
    parser.add_argument("--live", type=int, default=200_000, help="listings alive at once")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--rss-slack", type=float, default=0.15)
    parser.add_argument("--out", type=Path, default=Path(".cache/bench"))
    args = parser.parse_args()

    items = synthetic_items(20_000, seed=2)
    listings = [ListingUpsert(**to_listing_dict(i)) for i in items]
    seeds = split_seeds(items, 1.0, seed=2)
    seconds = args.minutes * 60
    port = free_port()
    sent = {"listings": 0, "deletes": 0, "seeds": 0}
    samples: list[dict] = []
    settings = Settings()
    started = time.time()
    with BenchCluster(settings, "soak", args.out / "logs", metrics={"port": port},
                      extractor={"backend": "keywords"}) as cluster:
        worker = cluster.start_worker("w1")
        deadline = time.monotonic() + 60
        while True:
            try:
                scrape(port)
                break
            except httpx.HTTPError:
                cluster.check_alive("w1")
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

        async def run() -> None:
            await asyncio.gather(
                _publish(cluster.settings.kafka, cluster.settings.topics, listings, seeds,
                         args.rate, args.seed_rate, args.live, seconds, sent),
                _sample(cluster, port, worker.pid, args.every, seconds, sent, samples))

        asyncio.run(run())
    report = write_report(args.out, "soak", {
        "benchmark": "soak", "minutes": args.minutes, "rate": args.rate,
        "seed_rate": args.seed_rate, "live": args.live, "published": sent,
        "achieved_rate": sent["listings"] / seconds,
        "verdict": verdict(samples, args.rss_slack, args.rate), "samples": samples},
        started=started)
    chart(samples, args.out / "soak.png")
    print(orjson.dumps(report["verdict"], option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
