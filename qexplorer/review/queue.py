"""The review queue: one item per detected listing, leases, decisions and undo, as pure state.

:class:`ReviewQueue` is rebuilt by applying the records of three topics in order: detections
(what to review, with the listing's text), moderation decisions (what was decided) and toxic
items (the seeds, and the listings already known to be toxic). The service applies its own
decisions through the same :meth:`ReviewQueue.apply_decision` that replays the topic, and a
decision carries a unique id, so a decision read twice is applied once.

Rules:

* one item per listing, however many seeds, queries and model versions found it;
* a listing leaves the queue once decided (``confirm``, ``reject`` or ``unsure``) and comes
  back only when a detection brings a different text (:func:`schemas.models.text_hash`) or the
  decision is undone;
* an item opened by a reviewer is leased to them for ``lease_s``; nobody else gets it or may
  decide it meanwhile; a reviewer holds one item at a time;
* a confirm becomes a toxic item ``undo_s`` after it was made (:meth:`ReviewQueue.due_seeds`);
  until then it can be undone, afterwards it is a seed and undo refuses.

The order is :class:`Priority`: more seeds and more queries that found a listing, a better best
rank, and the confirm rate of the seeds' categories so far.

No I/O and no clock: every method that needs the time takes ``now`` (epoch seconds).
"""

from __future__ import annotations

import bisect
import math
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from schemas.models import (
    DecisionKind,
    Detection,
    ModerationDecision,
    ToxicItem,
    query_id,
    text_hash,
)

#: Decisions a reviewer makes on an item (``undo`` withdraws one of these).
VERDICTS: tuple[DecisionKind, ...] = ("confirm", "reject", "unsure")


class ReviewError(Exception):
    """A request the queue refuses; ``status`` is the HTTP status that says why."""

    status = 400


class UnknownListing(ReviewError):
    """No detection names this listing."""

    status = 404


class Conflict(ReviewError):
    """Someone else holds the item, it was decided already, or its text changed."""

    status = 409


@dataclass(frozen=True, slots=True)
class Lease:
    """An item held by one reviewer until ``expires`` (epoch seconds)."""

    reviewer: str
    expires: float


@dataclass(frozen=True, slots=True)
class Seed:
    """What the queue knows of a toxic item: enough to show why a listing was found."""

    id: str
    title: str
    category: str


@dataclass(frozen=True, slots=True)
class Priority:
    """Why an item comes before another: each part, and their sum (higher first).

    ``seeds`` is 2·log2(1 + distinct seeds), ``queries`` log2(1 + distinct queries),
    ``rank`` 1 / best rank, ``category`` the confirm rate of the seeds' best category so far
    ((confirmed + 1) / (confirmed + rejected + 2): 0.5 before any decision).
    """

    seeds: float
    queries: float
    rank: float
    category: float

    @property
    def total(self) -> float:
        """The sum the queue sorts by."""
        return self.seeds + self.queries + self.rank + self.category


@dataclass(frozen=True, slots=True)
class _Summary:
    seed_ids: list[str]
    queries: list[str]
    best_rank: int
    model_versions: list[str]
    parts: tuple[float, float, float]  # the priority's seeds, queries and rank parts
    static: float  # their sum: the priority without the category part (moved by decisions)


@dataclass(slots=True)
class Item:
    """One listing to review: its latest text and every detection that found it."""

    listing_id: str
    title: str
    description: str
    text_hash: str
    text_at: datetime  # when the detection that brought this text was made
    first_detected_at: datetime
    findings: dict[str, Detection] = field(default_factory=dict)  # by detection key
    lease: Lease | None = None
    _summary: _Summary | None = None  # what the findings add up to, until they change

    def add(self, detection: Detection) -> None:
        """Record one more detection of this listing (a repeated key replaces its own)."""
        self.findings[detection.key] = detection
        self._summary = None

    def _summarised(self) -> _Summary:
        if self._summary is None:
            found = self.findings.values()
            seed_ids = list(dict.fromkeys(d.seed_id for d in found))
            queries = list(dict.fromkeys(q for d in found for q in d.queries))
            best_rank = min(d.best_rank for d in found)
            parts = (2 * math.log2(1 + len(seed_ids)), math.log2(1 + len(queries)),
                     1 / best_rank)
            self._summary = _Summary(
                seed_ids=seed_ids, queries=queries, best_rank=best_rank,
                model_versions=list(dict.fromkeys(d.model_version for d in found)),
                parts=parts, static=sum(parts))
        return self._summary

    @property
    def seed_ids(self) -> list[str]:
        """The seeds that found it, in the order they did."""
        return self._summarised().seed_ids

    @property
    def queries(self) -> list[str]:
        """Every query that found it, once each."""
        return self._summarised().queries

    @property
    def best_rank(self) -> int:
        """The best rank any of its queries gave it."""
        return self._summarised().best_rank

    @property
    def model_versions(self) -> list[str]:
        """The model versions whose queries found it."""
        return self._summarised().model_versions


def _rank_key(item: Item) -> tuple[float, str]:
    return -item._summarised().static, item.listing_id


class ReviewQueue:
    """The review state of every detected listing (see the module docstring)."""

    def __init__(self, lease_s: float = 300.0, undo_s: float = 30.0) -> None:
        """``lease_s``: how long an opened item stays with its reviewer; ``undo_s``: how long a
        confirm waits before it becomes a toxic item."""
        self.lease_s = lease_s
        self.undo_s = undo_s
        self.items: dict[str, Item] = {}
        self.decisions: dict[str, ModerationDecision] = {}  # listing id -> effective decision
        self.history: list[ModerationDecision] = []  # every decision, undo included, in order
        self.seeds: dict[str, Seed] = {}  # toxic items by id
        self._applied: set[str] = set()  # decision ids
        self._last_by: dict[str, ModerationDecision] = {}  # reviewer -> last undoable decision
        self._in_flight: set[str] = set()  # listing ids whose decision is being published
        self._sent: set[str] = set()  # listing ids handed out as toxic items, not yet read back
        self._skipped: defaultdict[str, set[str]] = defaultdict(set)  # reviewer -> listing ids
        self._held: dict[str, str] = {}  # reviewer -> the listing last leased to them
        self._ranked: list[tuple[float, str]] = []  # every item by static priority (_best)
        self._category = Counter()  # (category, decision) -> listings
        self._counted: dict[str, frozenset[str]] = {}  # decision id -> categories counted

    # --- reading the topics ------------------------------------------------------------

    def apply_detection(self, detection: Detection) -> None:
        """Add a detection: a new item, or one more finding of a known one. A detection made
        later with another text replaces the item's text (so a decided listing comes back)."""
        digest = text_hash(detection.listing_title, detection.listing_description)
        item = self.items.get(detection.listing_id)
        if item is None:
            item = self.items[detection.listing_id] = Item(
                detection.listing_id, detection.listing_title, detection.listing_description,
                digest, detection.detected_at, detection.detected_at,
                {detection.key: detection})
            bisect.insort(self._ranked, _rank_key(item))
            return
        old = _rank_key(item)
        item.add(detection)
        new = _rank_key(item)
        if new != old:
            del self._ranked[bisect.bisect_left(self._ranked, old)]
            bisect.insort(self._ranked, new)
        item.first_detected_at = min(item.first_detected_at, detection.detected_at)
        if digest != item.text_hash and detection.detected_at >= item.text_at:
            item.title, item.description = detection.listing_title, detection.listing_description
            item.text_hash, item.text_at = digest, detection.detected_at
            item.lease = None

    def apply_toxic_item(self, toxic: ToxicItem) -> None:
        """Record a toxic item: a seed to show, and a listing that needs no review."""
        self.seeds[toxic.id] = Seed(toxic.id, toxic.title, toxic.category)
        self._sent.discard(toxic.id)

    def apply_decision(self, decision: ModerationDecision) -> bool:
        """Apply a decision (from the topic or just made); False if it was applied before."""
        if decision.decision_id in self._applied:
            return False
        self._applied.add(decision.decision_id)
        self.history.append(decision)
        self._in_flight.discard(decision.listing_id)
        current = self.decisions.get(decision.listing_id)
        if decision.decision == "undo":
            if current is not None and current.decision_id == decision.supersedes:
                self._count(current, -1)
                del self.decisions[decision.listing_id]
            last = self._last_by.get(decision.reviewer)
            if last is not None and last.decision_id == decision.supersedes:
                del self._last_by[decision.reviewer]
            return True
        if current is not None:
            self._count(current, -1)
        self.decisions[decision.listing_id] = decision
        self._count(decision, +1)
        # the reviewer's last decision by the time it was made: a rebuild reads the topic's
        # partitions one after the other, not in the order the decisions were made
        last = self._last_by.get(decision.reviewer)
        if last is None or decision.decided_at >= last.decided_at:
            self._last_by[decision.reviewer] = decision
        item = self.items.get(decision.listing_id)
        if item is not None:
            item.lease = None
        return True

    # --- what a reviewer sees ----------------------------------------------------------

    def is_pending(self, item: Item) -> bool:
        """True while the item waits for a decision on its current text."""
        if item.listing_id in self.seeds or item.listing_id in self._in_flight:
            return False
        decided = self.decisions.get(item.listing_id)
        return decided is None or decided.text_hash != item.text_hash

    def pending(self, limit: int | None = None) -> list[Item]:
        """Items waiting for a decision, highest priority first (ties: found earlier first,
        then by listing id); the first ``limit`` of them when given."""
        if limit is not None:
            return self._best(self.is_pending, limit)
        return sorted((i for i in self.items.values() if self.is_pending(i)), key=self._order)

    def _order(self, item: Item) -> tuple:
        return -self.priority(item).total, item.first_detected_at, item.listing_id

    def _best(self, accept: Callable[[Item], bool], limit: int) -> list[Item]:
        """The first ``limit`` accepted items in queue order, without scoring every item: the
        items are walked by their static priority, and the category part is below 1, so the
        walk stops at the first item whose static part + 1 cannot beat the last one kept."""
        kept: list[tuple[tuple, Item]] = []
        for negative_static, listing_id in self._ranked:
            if len(kept) == limit and 1 - negative_static <= -kept[-1][0][0]:
                break
            item = self.items[listing_id]
            if not accept(item):
                continue
            key = self._order(item)
            if len(kept) < limit or key < kept[-1][0]:
                bisect.insort(kept, (key, item), key=lambda pair: pair[0])
                del kept[limit:]
        return [item for _, item in kept]

    def depth(self) -> int:
        """How many items wait for a decision."""
        return sum(1 for i in self.items.values() if self.is_pending(i))

    def priority(self, item: Item) -> Priority:
        """The item's :class:`Priority`."""
        categories = {self.seeds[s].category for s in item.seed_ids if s in self.seeds}
        rate = max((self.confirm_rate(c) for c in categories), default=0.5)
        seeds, queries, rank = item._summarised().parts
        return Priority(seeds=seeds, queries=queries, rank=rank, category=rate)

    def confirm_rate(self, category: str) -> float:
        """(confirmed + 1) / (confirmed + rejected + 2) among listings found from seeds of
        ``category``."""
        confirmed = self._category[(category, "confirm")]
        rejected = self._category[(category, "reject")]
        return (confirmed + 1) / (confirmed + rejected + 2)

    def upcoming(self, reviewer: str, now: float, limit: int,
                 exclude: str | None = None) -> list[Item]:
        """The next ``limit`` items ``reviewer`` would be given, in the order :meth:`take`
        gives them (what nobody else holds first, the items they skipped last), without
        ``exclude`` (the one they hold)."""
        skipped = self._skipped[reviewer]

        def free(item: Item) -> bool:
            return (item.listing_id != exclude and self.is_pending(item)
                    and not self._leased_to_other(item, reviewer, now))

        first = self._best(lambda i: free(i) and i.listing_id not in skipped, limit)
        if len(first) < limit and skipped:
            first += self._best(lambda i: free(i) and i.listing_id in skipped,
                                limit - len(first))
        return first

    def take(self, reviewer: str, now: float) -> Item | None:
        """The item ``reviewer`` should review now, leased to them: the one they already hold,
        else the first pending item nobody holds (items they skipped come last)."""
        held = self.held_by(reviewer, now)
        if held is not None:
            held.lease = Lease(reviewer, now + self.lease_s)
            return held
        skipped = self._skipped[reviewer]

        def free(item: Item) -> bool:
            return self.is_pending(item) and not self._leased_to_other(item, reviewer, now)

        found = self._best(lambda i: free(i) and i.listing_id not in skipped, 1)
        if not found and skipped:  # everything left was skipped by them: start over
            skipped.clear()
            found = self._best(free, 1)
        if not found:
            return None
        item = found[0]
        item.lease = Lease(reviewer, now + self.lease_s)
        self._held[reviewer] = item.listing_id
        return item

    def held_by(self, reviewer: str, now: float) -> Item | None:
        """The pending item ``reviewer`` holds a live lease on, if any."""
        item = self.items.get(self._held.get(reviewer, ""))
        lease = item.lease if item is not None else None
        if (lease is not None and lease.reviewer == reviewer and lease.expires > now
                and self.is_pending(item)):
            return item
        return None

    def skip(self, reviewer: str, listing_id: str, now: float) -> None:
        """Give the item back without deciding; the reviewer gets others first."""
        item = self._item(listing_id)
        if item.lease is not None and item.lease.reviewer == reviewer:
            item.lease = None
        self._skipped[reviewer].add(listing_id)

    def leases(self, now: float) -> int:
        """Live leases."""
        return sum(1 for i in self.items.values()
                   if i.lease is not None and i.lease.expires > now and self.is_pending(i))

    # --- deciding ----------------------------------------------------------------------

    def decide(self, reviewer: str, listing_id: str, verdict: str, seen_hash: str, now: float,
               category: str | None = None, reason: str = "") -> ModerationDecision:
        """The decision record for ``verdict`` on a listing the reviewer may decide (raises
        :class:`ReviewError` otherwise). The listing is held until :meth:`apply_decision` or
        :meth:`abandon`: publish the record, then apply it."""
        if verdict not in VERDICTS:
            raise ReviewError(f"decision must be one of {', '.join(VERDICTS)}")
        item = self._item(listing_id)
        if item.listing_id in self._in_flight:
            raise Conflict("a decision on this listing is being recorded")
        if not self.is_pending(item):
            raise Conflict("this listing was decided already")
        if seen_hash != item.text_hash:
            raise Conflict("the listing's text changed since it was shown: review it again")
        if self._leased_to_other(item, reviewer, now):
            raise Conflict("another reviewer has this item")
        findings = list(item.findings.values())
        record = ModerationDecision(
            decision_id=uuid.uuid4().hex, listing_id=listing_id, decision=verdict,
            text_hash=item.text_hash, category=category or None, reason=reason,
            reviewer=reviewer, detection_keys=[d.key for d in findings][:256],
            seed_ids=item.seed_ids[:256], model_versions=item.model_versions[:64],
            query_ids=list(dict.fromkeys(query_id(d.seed_id, q, d.model_version)
                                         for d in findings for q in d.queries))[:256],
            decided_at=datetime.fromtimestamp(now, UTC))
        self._in_flight.add(listing_id)
        return record

    def undo(self, reviewer: str, now: float) -> ModerationDecision:
        """The record that withdraws ``reviewer``'s last decision (raises :class:`ReviewError`
        when there is none, or when a confirm has already become a seed). Publish, then apply
        it, then :meth:`lease` the listing back to the reviewer."""
        last = self._last_by.get(reviewer)
        if last is None or self.decisions.get(last.listing_id) != last:
            raise ReviewError("nothing to undo")
        if last.decision == "confirm" and (last.listing_id in self.seeds
                                           or last.listing_id in self._sent):
            raise Conflict("this confirm is already a seed: it can no longer be undone")
        if last.listing_id in self._in_flight:
            raise Conflict("a decision on this listing is being recorded")
        self._in_flight.add(last.listing_id)
        return ModerationDecision(
            decision_id=uuid.uuid4().hex, listing_id=last.listing_id, decision="undo",
            text_hash=last.text_hash, reviewer=reviewer, detection_keys=last.detection_keys,
            seed_ids=last.seed_ids, model_versions=last.model_versions,
            query_ids=last.query_ids, supersedes=last.decision_id,
            decided_at=datetime.fromtimestamp(now, UTC))

    def abandon(self, listing_id: str) -> None:
        """Release a listing whose decision could not be published."""
        self._in_flight.discard(listing_id)

    def lease(self, reviewer: str, listing_id: str, now: float) -> None:
        """Lease an item to a reviewer in place of the one they hold (after an undo, the item
        returns to them)."""
        item = self._item(listing_id)
        held = self.held_by(reviewer, now)
        if held is not None:
            held.lease = None
        item.lease = Lease(reviewer, now + self.lease_s)
        self._held[reviewer] = listing_id

    def last_decision(self, reviewer: str, now: float | None = None
                      ) -> ModerationDecision | None:
        """The decision ``reviewer`` could undo (``now``: a confirm only within its undo
        window, before it is a seed), if any."""
        last = self._last_by.get(reviewer)
        if last is None or self.decisions.get(last.listing_id) != last:
            return None
        if now is not None and last.decision == "confirm" and (
                now >= self.undo_deadline(last) or last.listing_id in self.seeds
                or last.listing_id in self._sent):
            return None
        return last

    def undo_deadline(self, decision: ModerationDecision) -> float:
        """When a confirm becomes a seed, and can no longer be undone (epoch seconds)."""
        return decision.decided_at.timestamp() + self.undo_s

    # --- confirms become seeds ---------------------------------------------------------

    def due_seeds(self, now: float) -> list[ToxicItem]:
        """Toxic items for the confirms older than ``undo_s`` that are not toxic items yet;
        each is returned once (:meth:`apply_toxic_item` makes it final, and a restart reads
        the topic again, so none is lost or sent twice by one process)."""
        due: list[ToxicItem] = []
        for listing_id, decision in self.decisions.items():
            if (decision.decision != "confirm" or listing_id in self.seeds
                    or listing_id in self._sent or listing_id in self._in_flight
                    or decision.decided_at.timestamp() + self.undo_s > now):
                continue
            item = self.items.get(listing_id)
            if item is None or item.text_hash != decision.text_hash:
                continue  # the text confirmed is no longer known: nothing to seed from
            # the reviewer's category or none: a seed's category is no label for this listing
            due.append(ToxicItem(id=listing_id, title=item.title, description=item.description,
                                 category=decision.category or "",
                                 confirmed_by=decision.reviewer,
                                 confirmed_at=decision.decided_at))
            self._sent.add(listing_id)
        return due

    def unsend(self, listing_ids: Iterable[str]) -> None:
        """Toxic items that could not be published: offer them again."""
        self._sent.difference_update(listing_ids)

    # --- helpers -----------------------------------------------------------------------

    def _item(self, listing_id: str) -> Item:
        item = self.items.get(listing_id)
        if item is None:
            raise UnknownListing(f"no detection names listing {listing_id!r}")
        return item

    @staticmethod
    def _leased_to_other(item: Item, reviewer: str, now: float) -> bool:
        lease = item.lease
        return lease is not None and lease.reviewer != reviewer and lease.expires > now

    def _count(self, decision: ModerationDecision, sign: int) -> None:
        # a decision is counted under the categories its seeds had when it was counted in,
        # so taking it out again removes exactly what it added
        if sign > 0:
            categories = frozenset(
                self.seeds[s].category for s in decision.seed_ids if s in self.seeds)
            self._counted[decision.decision_id] = categories
        else:
            categories = self._counted.pop(decision.decision_id, frozenset())
        for category in categories:
            self._category[(category, decision.decision)] += sign
