"""``qexplorer demo``: the whole system on one machine, scored against known labels.

Starts the local broker when no cluster is configured, creates a fresh set of topics for this
run (an isolated run, ``qexplorer.harness.run``), starts a real worker process, publishes a
marketplace (synthetic, or a real labelled set), confirms a sample of its toxic items as seeds,
waits until every seed has been explored and prints what was detected with its precision
against the ground truth.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from rich.console import Console
from rich.table import Table

from qexplorer.config import Settings
from qexplorer.marketplace.items import LabelledItem

if TYPE_CHECKING:
    import subprocess

    from qexplorer.harness.run import IsolatedRun


@dataclass(frozen=True)
class DemoSummary:
    """What a demo run found, scored against the generator's (or the dataset's) labels."""

    listings: int
    harmful: int
    seeds: int
    seeds_explored: int
    detections: int
    detected_listings: int
    true_detections: int
    same_cluster_detections: int
    new_harmful_found: int
    extractor: str
    model_version: str
    seconds: float

    @property
    def precision(self) -> float:
        """Share of detections (seed, listing) whose listing is harmful."""
        return self.true_detections / self.detections if self.detections else 0.0

    @property
    def sibling_precision(self) -> float:
        """Share of detections whose listing is in the seed's own cluster."""
        return self.same_cluster_detections / self.detections if self.detections else 0.0

    def line(self) -> str:
        """The one-line summary the demo ends with."""
        return (f"SUMMARY seeds={self.seeds_explored}/{self.seeds} "
                f"detections={self.detections} precision={self.precision:.3f} "
                f"sibling_precision={self.sibling_precision:.3f} "
                f"new_harmful_found={self.new_harmful_found}/{self.harmful - self.seeds} "
                f"extractor={self.extractor} model={self.model_version} "
                f"time={self.seconds:.1f}s")


def score_detections(detections: Iterable[dict], items: Sequence[LabelledItem],
                     seed_ids: set[str]) -> dict[str, int]:
    """Count unique detections (by key) and how many are harmful / in the seed's cluster."""
    by_id = {item.id: item for item in items}
    unique = {d["key"]: d for d in detections}
    true = same = 0
    found: set[str] = set()
    for d in unique.values():
        listing = by_id.get(d["listing_id"])
        seed = by_id.get(d["seed_id"])
        if listing is not None and listing.harmful:
            true += 1
            if listing.id not in seed_ids:
                found.add(listing.id)
            if seed is not None and seed.cluster is not None and seed.cluster == listing.cluster:
                same += 1
    return {"detections": len(unique), "true": true, "same_cluster": same,
            "listings": len({d["listing_id"] for d in unique.values()}), "new_found": len(found)}


def _load_items(dataset: str | None, benign: int) -> list[LabelledItem]:
    if dataset is None:
        from qexplorer.marketplace.synthetic import generate_marketplace

        return generate_marketplace(n_benign=benign)
    from qexplorer.marketplace.datasets import dedupe_texts, load_dataset, marketplace_sample

    return marketplace_sample(dedupe_texts(load_dataset(dataset)), harmful_rate=0.12, seed=0)


def run_demo(settings: Settings, *, dataset: str | None, benign: int, confirm: float,
             timeout_s: float, keep: bool, console: Console, review: bool = False
             ) -> DemoSummary:
    """Run the demo end to end and print its report; returns the summary. With ``review``,
    then serve the review queue holding the demo's detections (the worker keeps running, so
    a confirmed listing is explored as a new seed) until Ctrl-C."""
    from qexplorer.harness import broker
    from qexplorer.harness.run import IsolatedRun
    from qexplorer.marketplace.synthetic import split_seeds

    started = time.monotonic()
    if settings.kafka.uses_local_broker:
        console.print("[bold]1/5[/bold] local Kafka broker (no KAFKA_BOOTSTRAP configured)")
        broker.ensure_started(settings, progress=console.print)
    with IsolatedRun(settings, "demo", settings.paths.cache_dir / "demo", keep=keep) as run:
        console.print(f"[bold]2/5[/bold] topics: {', '.join(run.settings.topics.all())}")
        if settings.extractor.backend == "keywords":
            console.print("extractor: keywords (YAKE) - no trained model is configured; set "
                          "QEXPLORER_EXTRACTOR and QEXPLORER_MODEL to use one")
        process = run.start_worker("demo")
        console.print(f"[bold]3/5[/bold] worker pid {process.pid} "
                      f"(log: {run.log_path('demo')})")
        items = _load_items(dataset, benign)
        seeds = split_seeds(items, confirm, seed=11)
        seed_ids = {s.id for s in seeds}
        run.publish_listings(items)
        run.confirm(seeds, "demo-moderator")
        harmful = sum(i.harmful for i in items)
        console.print(f"[bold]4/5[/bold] published {len(items)} listings ({harmful} toxic, "
                      f"source: {dataset or 'synthetic marketplace'}), confirmed {len(seeds)}")
        explored = _wait_explored(run, seed_ids, timeout_s, process, console)
        detections = [orjson.loads(m.value) for m in run.read(run.settings.topics.detections)]
        counts = score_detections(detections, items, seed_ids)
        first = detections[0] if detections else {}
        summary = DemoSummary(
            listings=len(items), harmful=harmful, seeds=len(seeds),
            seeds_explored=len(explored), detections=counts["detections"],
            detected_listings=counts["listings"], true_detections=counts["true"],
            same_cluster_detections=counts["same_cluster"],
            new_harmful_found=counts["new_found"], extractor=first.get("extractor", "-"),
            model_version=first.get("model_version", "-"),
            seconds=time.monotonic() - started)
        _report(summary, detections, items, console)
        if review:
            _serve_review(run.settings, console)
    return summary


#: The demo's undo window: a confirm becomes a seed this soon, so it is explored while you watch.
DEMO_UNDO_S = 5.0


def _serve_review(settings: Settings, console: Console) -> None:
    """Serve the review queue of this run's topics with a one-off demo reviewer, and say
    what restarting it (and the worker) on these topics needs."""
    import secrets
    import shlex

    from qexplorer.review.auth import hash_password
    from qexplorer.review.service import ReviewService

    password = secrets.token_urlsafe(9)
    users = {"demo": hash_password(password)}
    settings = settings.replace(review={"users": users, "undo_s": DEMO_UNDO_S})
    env = {"QEXPLORER_TOPIC_PREFIX": settings.topic.prefix,
           "QEXPLORER_WORKER_APP_ID": settings.worker.app_id,
           "QEXPLORER_REVIEW_USERS": orjson.dumps(users).decode(),
           "QEXPLORER_REVIEW_UNDO_S": f"{DEMO_UNDO_S:g}"}
    restart = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())

    def ready(url: str) -> None:
        console.print(
            f"\nREVIEW {url}  (sign in as [bold]demo[/bold] / [bold]{password}[/bold]; a "
            f"confirm becomes a seed {DEMO_UNDO_S:g} s after it is made, until then z undoes "
            "it, and the worker explores it; Ctrl-C stops the service and the worker and "
            "deletes the demo topics; killing this process stops the worker too and leaves "
            "the topics)\n"
            f"to restart on these topics (--keep keeps them after Ctrl-C): {restart} "
            "qexplorer worker & qexplorer review", highlight=False, soft_wrap=True)

    try:
        asyncio.run(ReviewService(settings).run(ready=ready))
    except KeyboardInterrupt:
        console.print("review service stopped")


def _wait_explored(run: IsolatedRun, seed_ids: set[str], timeout_s: float,
                   process: subprocess.Popen, console: Console) -> set[str]:
    explored: set[str] = set()
    deadline = time.monotonic() + timeout_s
    with console.status("exploring seeds...") as status:
        while explored != seed_ids and time.monotonic() < deadline:
            if process.poll() is not None:
                console.print(f"[red]the worker exited with code {process.returncode}[/red]")
                break
            explored = run.explored(seed_ids)
            status.update(f"exploring seeds... {len(explored)}/{len(seed_ids)}")
            time.sleep(1.0)
    return explored


def _report(summary: DemoSummary, detections: list[dict], items: Sequence[LabelledItem],
            console: Console) -> None:
    by_id = {i.id: i for i in items}
    table = Table(title="[bold]5/5[/bold] a sample of the detections (best 3 of 6 seeds)")
    for column in ("seed", "found listing", "queries", "rank", "truth"):
        table.add_column(column, overflow="fold")
    per_seed: dict[str, list[dict]] = {}
    for d in sorted(detections, key=lambda d: (d["seed_id"], d["best_rank"])):
        per_seed.setdefault(d["seed_id"], []).append(d)
    sample = [d for seed in list(per_seed)[:6] for d in per_seed[seed][:3]]
    for d in sample:
        listing = by_id.get(d["listing_id"])
        truth = "toxic" if listing and listing.harmful else "benign"
        table.add_row(by_id[d["seed_id"]].title[:40] if d["seed_id"] in by_id else d["seed_id"],
                      (listing.title[:50] if listing else d["listing_id"]),
                      ", ".join(d["queries"])[:40], str(d["best_rank"]), truth)
    console.print(table)
    console.print(summary.line(), highlight=False, soft_wrap=True)
