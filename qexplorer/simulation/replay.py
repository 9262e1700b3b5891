"""Replay simulation: how many harmful listings a moderation team finds with each extractor.

The offline analogue of the paper's online deployment (arXiv 2502.18480, where more toxic items
were found once the query extractor was deployed). For one labelled marketplace and several
extractor configurations, each configuration gets a fresh, isolated run of the real system
(its own topics, consumer group, state directory and worker process, as in ``qexplorer demo``):
every item is published as a listing, a fraction of the harmful ones is confirmed as seeds,
and a simulated moderator follows the detections. Each new detected listing is one item sent
to review; after a fixed delay the moderator judges it against the ground truth, publishes
its decision on ``moderation-decisions`` (so the standing queries' precision is counted) and
the harmful ones as confirmed toxic items, which become new seeds, and so on until the
exploration runs dry. With ``arrivals`` > 0 the last share of the items (in their order:
arrival order) is not on the market at the start but published during the run at
``arrival_rate``, so what finds them is either a later seed's exploration or a standing query
(``agents.standing``); the summary counts the harmful items only standing queries found.

This module owns:

* :class:`Moderator`: the review queue as a pure state machine (``observe`` detections,
  ``due`` judgements), with the time series it records after every review;
* :func:`summarise`, :func:`stop_reason` and :func:`plot_replay`: pure
  functions over that series and the report;
* :func:`run_replay`: the thin Kafka orchestration around them, writing ``replay.json`` and
  ``replay.png`` in the output folder.

A series point is ``{"elapsed_s", "reviewed", "harmful_found", "share_found"}``: seconds since
the initial seeds were confirmed, items sent to review so far, harmful items confirmed so far
(initial seeds included) and that count over all harmful items. The first point is the start
(nothing reviewed, only the initial seeds found).
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import orjson

from agents.extractor import registry
from qexplorer.config import Settings
from qexplorer.config.versions import library_versions
from qexplorer.harness import broker
from qexplorer.harness.run import IsolatedRun
from qexplorer.kafka.io import follow, publish
from qexplorer.marketplace.corpora import data_hash
from qexplorer.marketplace.items import LabelledItem, to_listing_dict, to_toxic_dict
from qexplorer.marketplace.synthetic import split_seeds
from schemas.codec import SchemaError, decode
from schemas.models import (
    DeadLetter,
    Detection,
    ListingUpsert,
    ModerationDecision,
    ToxicItem,
    query_id,
)
from schemas.topics import LISTINGS, MODERATION_DECISIONS, TOXIC_ITEMS

#: ``confirmed_by`` of the items the simulated moderator confirms.
MODERATOR = "replay-moderator"
#: ``confirmed_by`` of the initial seeds.
SEEDER = "replay-seed"

# --- the moderator (pure) -------------------------------------------------------------------


class DetectionLike(Protocol):
    """What the moderator reads from a detection (``schemas.models.Detection`` has it)."""

    key: str
    seed_id: str
    listing_id: str
    standing_query_id: str | None


@dataclass(frozen=True, slots=True)
class Judgement:
    """The moderator's verdict on one listing sent to review."""

    listing_id: str
    seed_id: str
    detection_key: str
    harmful: bool
    #: True when the listing is harmful and was not confirmed yet: publish it as a toxic item.
    confirm: bool
    #: Exploration depth: an item found from an initial seed is round 1, from that one round 2.
    round: int
    observed_at: float
    judged_at: float


@dataclass(order=True, slots=True)
class _Pending:
    due_at: float
    order: int
    listing_id: str = field(compare=False)
    seed_id: str = field(compare=False)
    key: str = field(compare=False)
    observed_at: float = field(compare=False)


class Moderator:
    """A review queue that judges each detected listing once, ``delay_s`` after it arrived.

    Detections are deduplicated by key and by listing: a listing already queued, reviewed or
    confirmed (the initial seeds included) is never sent to review again. Judgements come out
    of :meth:`due` in the order they fall due; the harmful ones are confirmed at that moment.
    Times are the caller's clock (e.g. ``time.monotonic()``), ``start`` included.
    """

    def __init__(self, items: Iterable[LabelledItem], seeds: Iterable[str], *,
                 delay_s: float = 2.0, start: float = 0.0) -> None:
        if delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        self._harmful = {item.id: item.harmful for item in items}
        self.total_harmful = sum(self._harmful.values())
        self.delay_s = delay_s
        self.start = start
        self._round: dict[str, int] = {s: 0 for s in seeds}
        self._confirmed: set[str] = set(self._round)
        self._keys: set[str] = set()
        self._seen_listings: set[str] = set(self._confirmed)
        self._queue: list[_Pending] = []
        self._order = 0
        self._via: dict[str, set[str]] = {}  # listing -> "explore" / "standing"
        #: Unique detections (by key), duplicates of a seen listing, reviews, true reviews.
        self.detections = 0
        self.duplicates = 0
        self.reviewed = 0
        self.true_reviewed = 0
        self.series: list[dict] = [self._point(start)]

    @property
    def harmful_found(self) -> int:
        """Harmful items confirmed so far, initial seeds included."""
        return sum(self._harmful.get(i, False) for i in self._confirmed)

    @property
    def confirmed(self) -> frozenset[str]:
        """Every confirmed item: the initial seeds and what the moderator confirmed."""
        return frozenset(self._confirmed)

    @property
    def found_only_by_standing(self) -> int:
        """Harmful items confirmed that no seed's exploration found, only standing queries."""
        return sum(self._harmful.get(i, False) and self._via.get(i) == {"standing"}
                   for i in self._confirmed)

    @property
    def found_by_standing(self) -> int:
        """Harmful items confirmed that a standing query found (too)."""
        return sum(self._harmful.get(i, False) and "standing" in self._via.get(i, ())
                   for i in self._confirmed)

    @property
    def standing_detected(self) -> int:
        """Listings (not initial seeds) that a standing query detected, reviewed or not."""
        return sum("standing" in via and self._round.get(listing) != 0
                   for listing, via in self._via.items())

    @property
    def standing_harmful(self) -> int:
        """Of :attr:`standing_detected`, the harmful ones: the standing queries' precision
        is this over that."""
        return sum("standing" in via and self._round.get(listing) != 0
                   and self._harmful.get(listing, False)
                   for listing, via in self._via.items())

    @property
    def pending(self) -> int:
        """Listings waiting for their review."""
        return len(self._queue)

    @property
    def next_due(self) -> float | None:
        """When the next review falls due, or None when nothing waits."""
        return self._queue[0].due_at if self._queue else None

    @property
    def rounds(self) -> int:
        """The deepest exploration round that confirmed an item (0: only initial seeds)."""
        return max(self._round.values(), default=0)

    def observe(self, detection: DetectionLike, now: float) -> bool:
        """Take one detection; True when it sends a new listing to review."""
        if detection.key in self._keys:
            return False
        self._keys.add(detection.key)
        self._via.setdefault(detection.listing_id, set()).add(
            "standing" if getattr(detection, "standing_query_id", None) else "explore")
        self.detections += 1
        if detection.listing_id in self._seen_listings:
            self.duplicates += 1
            return False
        self._seen_listings.add(detection.listing_id)
        self._order += 1
        heapq.heappush(self._queue, _Pending(now + self.delay_s, self._order,
                                             detection.listing_id, detection.seed_id,
                                             detection.key, now))
        return True

    def due(self, now: float, limit: int | None = None,
            order: Sequence[str] | None = None) -> list[Judgement]:
        """Judge every listing whose review delay has passed (at most ``limit``), in due
        order; with ``order`` (listing ids as the moderators take them, e.g. the review
        queue's priority) those due listings come first in that order, the rest after them in
        due order."""
        if order is None:
            taken = []
            while self._queue and self._queue[0].due_at <= now and (limit is None
                                                                     or len(taken) < limit):
                taken.append(heapq.heappop(self._queue))
        else:
            rank = {listing: n for n, listing in enumerate(order)}
            ready = sorted((p for p in self._queue if p.due_at <= now),
                           key=lambda p: (rank.get(p.listing_id, len(rank)), p))
            taken = ready[:limit]
            chosen = {id(p) for p in taken}
            self._queue = [p for p in self._queue if id(p) not in chosen]
            heapq.heapify(self._queue)
        return [self._judge(item) for item in taken]

    def _judge(self, item: _Pending) -> Judgement:
        harmful = self._harmful.get(item.listing_id, False)
        confirm = harmful and item.listing_id not in self._confirmed
        depth = self._round.get(item.seed_id, 0) + 1
        if confirm:
            self._confirmed.add(item.listing_id)
            self._round[item.listing_id] = depth
        self.reviewed += 1
        self.true_reviewed += harmful
        self.series.append(self._point(item.due_at))
        return Judgement(item.listing_id, item.seed_id, item.key, harmful, confirm, depth,
                         item.observed_at, item.due_at)

    def _point(self, at: float) -> dict:
        found = self.harmful_found
        return {"elapsed_s": round(at - self.start, 3), "reviewed": self.reviewed,
                "harmful_found": found,
                "share_found": found / self.total_harmful if self.total_harmful else 0.0}


# --- pure helpers ---------------------------------------------------------------------------


def summarise(series: Sequence[dict]) -> dict:
    """Totals of one run's series (whose first point is the start, before any review).

    ``review_precision`` is the share of reviewed items that were harmful (each reviewed
    listing is new, so every harmful one was a new find); ``reviews_to_half`` is how many
    reviews it took to have half of all harmful items (None if never).
    """
    if not series:
        raise ValueError("an empty series has no summary")
    first, last = series[0], series[-1]
    new = last["harmful_found"] - first["harmful_found"]
    half = next((p["reviewed"] for p in series if p["share_found"] >= 0.5), None)
    return {"reviewed": last["reviewed"], "harmful_found": last["harmful_found"],
            "initial_harmful_found": first["harmful_found"], "new_harmful_found": new,
            "share_found": round(last["share_found"], 4),
            "initial_share_found": round(first["share_found"], 4),
            "review_precision": round(new / last["reviewed"], 4) if last["reviewed"] else 0.0,
            "reviews_to_half": half, "elapsed_s": last["elapsed_s"]}


def stop_reason(now: float, *, started: float, last_activity: float, pending: int,
                unexplored: int, idle_s: float, timeout_s: float,
                stall_s: float) -> str | None:
    """Why a run should stop now, or None to go on.

    ``timeout`` after ``timeout_s`` in all; otherwise never while reviews are pending.
    ``idle`` once every seed has been explored (or dead-lettered) and nothing happened (a new
    detection, a review, a search-feedback record) for ``idle_s``; ``stalled`` when seeds are
    still unexplored but nothing happened for ``stall_s``.
    """
    if now - started >= timeout_s:
        return "timeout"
    if pending:
        return None
    quiet = now - last_activity
    if not unexplored and quiet >= idle_s:
        return "idle"
    if unexplored and quiet >= stall_s:
        return "stalled"
    return None


def plot_replay(report: dict, path: Path) -> Path:
    """Draw share of all harmful items found against items sent to review, one line per
    extractor, with a random-review baseline and the perfect-reviewer ceiling; save as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    runs = report["extractors"]
    harmful, items = report["harmful"], report["items"]
    fig, ax = plt.subplots(figsize=(9, 5.6), dpi=150)
    x_max = max([r["series"][-1]["reviewed"] for r in runs.values() if r["series"]] + [1])
    seeds = max([r["series"][0]["harmful_found"] for r in runs.values() if r["series"]] + [0])
    if harmful:
        xs = [0, x_max]
        rate = (harmful - seeds) / max(items - seeds, 1)
        ax.plot(xs, [min(1, (seeds + rate * x) / harmful) for x in xs], color="0.55", ls="--",
                lw=1, label=f"random review (base rate {rate:.1%})")
        perfect = min(x_max, harmful - seeds)
        ax.plot([0, perfect, x_max], [seeds / harmful, 1, 1], color="0.55", ls=":", lw=1,
                label="perfect reviewer (every review harmful)")
    for label, run in runs.items():
        series, summary = run["series"], run["summary"]
        if not series:
            continue
        [line] = ax.plot([p["reviewed"] for p in series], [p["share_found"] for p in series],
                         drawstyle="steps-post", lw=2,
                         label=(f"{label}: {summary['share_found']:.0%} found, "
                                f"{summary['reviewed']} reviewed, precision "
                                f"{summary['review_precision']:.2f}, "
                                f"{summary.get('rounds', '?')} rounds"))
        ax.plot([series[-1]["reviewed"]], [series[-1]["share_found"]], "o", ms=5,
                color=line.get_color())
    ax.set_xlim(0, x_max * 1.02)
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("listings sent to review")
    ax.set_ylabel("share of all harmful listings confirmed")
    ax.set_title("Replay: harmful listings found per review effort\n"
                 f"{report['dataset']}: {items} listings, {harmful} harmful; "
                 f"{report['initial_fraction']:.0%} confirmed at start; "
                 f"review delay {report['review_delay_s']:g}s", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --- orchestration --------------------------------------------------------------------------


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-")[:40] or "run"


def _toxic(item: LabelledItem, confirmed_by: str) -> ToxicItem:
    return ToxicItem(**to_toxic_dict(item, confirmed_by))


def _check_extractor(base: Settings, extractor: dict[str, str]) -> Settings:
    """The base settings with a run's extractor (``backend``, ``model``, ...) on top,
    validated, so a bad configuration fails here rather than in the worker."""
    run = base.replace(extractor=extractor)
    registry.check(run.extractor)
    return run


@dataclass
class _Watch:
    """What the replay process saw on the topics of one run."""

    last_activity: float
    explored: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    model_version: str | None = None
    extractor: str | None = None
    bad_messages: int = 0
    query_ids: dict[str, set[str]] = field(default_factory=dict)  # listing -> its finders
    to_arrive: int = 0  # listings still to be published


async def _follow_detections(settings: Settings, moderator: Moderator, watch: _Watch) -> None:
    async for message in follow(settings.kafka, settings.topics.detections,
                                from_beginning=True):
        try:
            detection = decode(Detection, message.value)
        except SchemaError:
            watch.bad_messages += 1
            continue
        watch.query_ids.setdefault(detection.listing_id, set()).update(
            query_id(detection.seed_id, q, detection.model_version) for q in detection.queries)
        watch.model_version = watch.model_version or detection.model_version
        watch.extractor = watch.extractor or detection.extractor
        if moderator.observe(detection, time.monotonic()):
            watch.last_activity = time.monotonic()


async def _follow_explored(settings: Settings, watch: _Watch) -> None:
    """Seeds explored (their search feedback) or failed (dead-lettered toxic items)."""
    async for message in follow(settings.kafka, settings.topics.feedback, from_beginning=True):
        try:
            seed = orjson.loads(message.value or b"null")["seed_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            watch.bad_messages += 1
            continue
        if seed and seed not in watch.explored:
            watch.explored.add(seed)
            watch.last_activity = time.monotonic()


async def _follow_dead_letters(settings: Settings, watch: _Watch) -> None:
    async for message in follow(settings.kafka, settings.topics.dead_letter,
                                from_beginning=True):
        try:
            record = decode(DeadLetter, message.value)
        except SchemaError:
            watch.bad_messages += 1
            continue
        if record.topic == settings.topics.toxic_items and record.raw_key_b64:
            watch.failed.add(base64.b64decode(record.raw_key_b64).decode("utf-8", "replace"))
            watch.last_activity = time.monotonic()


async def _arrive(settings: Settings, items: Sequence[LabelledItem], rate: float,
                  watch: _Watch) -> None:
    """Publish ``items`` as new listings, in order, ``rate`` a second (in batches of at most
    a second's worth)."""
    step = max(1, int(rate))
    for start in range(0, len(items), step):
        batch = items[start:start + step]
        await publish(settings.kafka, settings.topics, LISTINGS,
                      [ListingUpsert(**to_listing_dict(i)) for i in batch])
        watch.to_arrive -= len(batch)
        watch.last_activity = time.monotonic()
        await asyncio.sleep(len(batch) / rate)


def _decision(judgement: Judgement, watch: _Watch) -> ModerationDecision:
    """What the simulated moderator records on a judged listing."""
    return ModerationDecision(
        decision_id=uuid.uuid4().hex, listing_id=judgement.listing_id,
        decision="confirm" if judgement.harmful else "reject", text_hash="replay",
        reviewer=MODERATOR, detection_keys=[judgement.detection_key],
        seed_ids=[judgement.seed_id],
        query_ids=sorted(watch.query_ids.get(judgement.listing_id, ()))[:256])


async def _moderate(settings: Settings, moderator: Moderator, by_id: dict[str, LabelledItem],
                    process: subprocess.Popen, *, idle_s: float, timeout_s: float,
                    label: str, progress: Callable[[str], None],
                    arrivals: Sequence[LabelledItem] = (), arrival_rate: float = 50.0
                    ) -> tuple[str, _Watch]:
    """The moderator loop of one run: follow the topics, publish the arrivals, review,
    record decisions, confirm, until it stops."""
    watch = _Watch(last_activity=time.monotonic(), to_arrive=len(arrivals))
    tasks = [asyncio.create_task(_follow_detections(settings, moderator, watch)),
             asyncio.create_task(_follow_explored(settings, watch)),
             asyncio.create_task(_follow_dead_letters(settings, watch))]
    if arrivals:
        tasks.append(asyncio.create_task(_arrive(settings, arrivals, arrival_rate, watch)))
    seeds = set(moderator.confirmed)
    stall_s = max(10 * idle_s, 60.0)
    last_report = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            judgements = moderator.due(now)
            if judgements:
                await publish(settings.kafka, settings.topics, MODERATION_DECISIONS,
                              [_decision(j, watch) for j in judgements])
            confirm = [j.listing_id for j in judgements if j.confirm]
            if confirm:
                await publish(settings.kafka, settings.topics, TOXIC_ITEMS,
                              [_toxic(by_id[i], MODERATOR) for i in confirm])
                seeds.update(confirm)
            if judgements:
                watch.last_activity = time.monotonic()
            for task in tasks:
                if task.done() and not (task is tasks[-1] and arrivals and
                                        watch.to_arrive == 0):  # a follower ends by failing
                    task.result()
                    raise RuntimeError("a topic follower stopped")
            if process.poll() is not None:
                return "worker-exited", watch
            now = time.monotonic()
            unexplored = len(seeds - watch.explored - watch.failed)
            reason = stop_reason(now, started=moderator.start,
                                 last_activity=watch.last_activity,
                                 pending=moderator.pending + watch.to_arrive,
                                 unexplored=unexplored,
                                 idle_s=idle_s, timeout_s=timeout_s, stall_s=stall_s)
            if reason:
                return reason, watch
            if now - last_report >= 5.0:
                last_report = now
                progress(f"{label}: {moderator.reviewed} reviewed, {moderator.harmful_found}/"
                         f"{moderator.total_harmful} harmful found, {moderator.pending} "
                         f"pending, {unexplored} seeds unexplored"
                         + (f", {watch.to_arrive} listings to arrive" if arrivals else ""))
            wake = moderator.next_due
            await asyncio.sleep(0.25 if wake is None else min(0.25, max(0.0, wake - now)))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _run_one(settings: Settings, items: list[LabelledItem], seeds: list[LabelledItem],
             overrides: dict[str, str], *, label: str, out_dir: Path,
             review_delay_s: float, idle_s: float, timeout_s: float, keep: bool,
             progress: Callable[[str], None], arrivals: Sequence[LabelledItem] = (),
             arrival_rate: float = 50.0) -> dict:
    """One isolated run (``qexplorer.harness.run``): a worker, the marketplace, the seeds, the
    moderator loop (which publishes ``arrivals`` along the way)."""
    started = time.monotonic()
    with IsolatedRun(settings, f"replay-{_slug(label)}", out_dir / "logs", keep=keep,
                     extractor=overrides) as run:
        process = run.start_worker("replay")
        extractor = run.settings.extractor
        progress(f"{label}: worker pid {process.pid} ({extractor.backend}"
                 f"{f', model {extractor.model}' if extractor.model else ''}; "
                 f"log {run.log_path('replay')})")
        run.publish_listings(items)
        moderator = Moderator([*items, *arrivals], [s.id for s in seeds],
                              delay_s=review_delay_s, start=time.monotonic())
        run.confirm(seeds, SEEDER)
        progress(f"{label}: published {len(items)} listings, confirmed {len(seeds)} seeds"
                 + (f"; {len(arrivals)} listings to arrive at {arrival_rate:g}/s"
                    if arrivals else ""))
        reason, watch = asyncio.run(_moderate(
            run.settings, moderator, {i.id: i for i in [*items, *arrivals]}, process,
            idle_s=idle_s, timeout_s=timeout_s, label=label, progress=progress,
            arrivals=arrivals, arrival_rate=arrival_rate))
        exit_code = run.stop_worker("replay")
        where = {"log": str(run.log_path("replay")), "topic_prefix": run.settings.topic.prefix,
                 "app_id": run.settings.worker.app_id}
    summary = summarise(moderator.series)
    summary.update({
        "status": reason, "seeds_initial": len(seeds),
        "seeds": len(moderator.confirmed), "seeds_explored": len(watch.explored),
        "seeds_failed": len(watch.failed), "rounds": moderator.rounds,
        "detections": moderator.detections, "duplicate_detections": moderator.duplicates,
        "pending_at_stop": moderator.pending, "bad_messages": watch.bad_messages,
        "arrived": len(arrivals) - watch.to_arrive,
        "harmful_arrived": sum(i.harmful for i in arrivals[:len(arrivals) - watch.to_arrive]),
        "found_by_standing": moderator.found_by_standing,
        "found_only_by_standing": moderator.found_only_by_standing,
        "standing_detected": moderator.standing_detected,
        "standing_harmful": moderator.standing_harmful,
        "extractor": watch.extractor or extractor.backend,
        "model_version": watch.model_version, "worker_exit_code": exit_code,
        "seconds": round(time.monotonic() - started, 1)})
    progress(f"{label}: {reason}; {summary['reviewed']} reviewed, {summary['harmful_found']}/"
             f"{moderator.total_harmful} harmful found ({summary['share_found']:.0%}), "
             f"precision {summary['review_precision']:.2f}, {summary['rounds']} rounds, "
             f"{summary['seconds']:.0f}s")
    return {"settings": dict(overrides), "summary": summary, "series": moderator.series,
            **where}


def run_replay(settings: Settings, items: list[LabelledItem],
               extractors: dict[str, dict[str, str]], *, dataset_name: str, out_dir: Path,
               initial_fraction: float = 0.1, review_delay_s: float = 2.0,
               idle_s: float = 15.0, timeout_s: float = 900.0, seed: int = 0,
               progress: Callable[[str], None] | None = None, keep: bool = False,
               arrivals: float = 0.0, arrival_rate: float = 50.0) -> dict:
    """Replay one labelled marketplace through the real system once per extractor.

    ``extractors`` maps a label to extractor settings for that run (``{"backend":
    "keywords", "model": "tfidf"}``, ``{"backend": "transformers", "model": "/models/x"}``);
    anything not overridden comes from ``settings``. Runs go one after the other, each with
    its own topics, consumer group, state directory and worker, all removed afterwards unless
    ``keep``. The same initial seeds (``split_seeds(items, initial_fraction, seed)``) start
    every run. A run ends ``idle`` (every seed explored, nothing new for ``idle_s``),
    ``stalled`` (seeds left unexplored but nothing new for max(10 * idle_s, 60 s): a worker
    that cannot load its model), ``timeout`` (``timeout_s``) or ``worker-exited``; the
    summary's ``status`` says which. Writes ``replay.json`` and ``replay.png`` (and
    the worker logs under ``logs/``) in ``out_dir`` after every run; returns the report.

    ``arrivals``: the share of ``items`` (the last ones, in order) that is published during
    the run, ``arrival_rate`` a second, instead of at the start; initial seeds are chosen
    among the others. The summary then says how many harmful items only standing queries
    found (``found_only_by_standing``).
    """
    say = progress or (lambda _message: None)
    if not extractors:
        raise ValueError("no extractor configuration to replay")
    if not 0.0 <= arrivals < 1.0 or arrival_rate <= 0:
        raise ValueError("arrivals must be in [0, 1) and arrival_rate > 0")
    harmful = sum(i.harmful for i in items)
    cut = len(items) - round(len(items) * arrivals)
    items, later = list(items[:cut]), list(items[cut:])
    seeds = split_seeds(items, initial_fraction, seed=seed)
    if not seeds:
        raise ValueError(f"{dataset_name}: no initial seeds ({harmful} harmful items, "
                         f"initial_fraction={initial_fraction})")
    if len({_slug(label) for label in extractors}) != len(extractors):
        raise ValueError("extractor labels must stay distinct once reduced to [A-Za-z0-9_-]")
    for label, overrides in extractors.items():  # fail on a bad configuration before any run
        checked = _check_extractor(settings, overrides).extractor
        model = checked.model or ""
        if (checked.backend != "keywords" and model.startswith(("/", "./", "../", "~"))
                and not Path(model).expanduser().exists()):
            raise ValueError(f"{label}: model directory {model} does not exist")
    broker.ensure_started(settings, progress=say)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
    report: dict = {
        "dataset": dataset_name, "items": len(items) + len(later), "harmful": harmful,
        "initial_fraction": initial_fraction, "initial_seeds": len(seeds),
        "review_delay_s": review_delay_s, "idle_s": idle_s, "seed": seed,
        "arrivals": len(later), "arrival_rate": arrival_rate,
        "data_hash": data_hash([*items, *later]), "run_id": run_id,
        "versions": library_versions(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "extractors": {}}
    say(f"replay {run_id}: {dataset_name}, {len(items) + len(later)} listings "
        f"({len(later)} arriving during the run), {harmful} harmful, {len(seeds)} initial "
        f"seeds, {len(extractors)} extractor(s)")
    for label, overrides in extractors.items():
        report["extractors"][label] = _run_one(
            settings, items, seeds, overrides, label=label, out_dir=out_dir,
            review_delay_s=review_delay_s, idle_s=idle_s, timeout_s=timeout_s, keep=keep,
            progress=say, arrivals=later, arrival_rate=arrival_rate)
        (out_dir / "replay.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        plot_replay(report, out_dir / "replay.png")
    return report
