"""Pure standing-query logic: which queries of an explored seed keep watching new listings, how
a new listing's hits become detections, and when a standing query retires itself.

A seed's exploration searched every listing that existed then. Its productive queries stay on
as standing queries (``schemas.models.StandingQuery``) and are run again on every batch of new
listings (``agents.watcher``). A new listing matches a standing query when the query scores it
at least as high as the last result the query returned in its exploration (``min_score``): it
would have been among that exploration's results. A query that returned fewer results than it
was allowed has no such floor, so a score alone would let it fire on any listing sharing one
word, even a number; a match must also carry the evidence the query's words give
(:func:`has_evidence`): the words it holds must weigh (by their rarity) a share of the query's,
numbers and single letters are no evidence, and a query of common words alone fires on
nothing (:func:`is_common`), but only while its words were common already in the index it was
explored on (``StandingQuery.common_at_start``): a flood of relistings that makes its own words
common must not silence it. The
:class:`StandingBook` holds the standing-queries topic and the moderation decisions on what the
queries found, and says which queries are active: a query retires when an operator retires it,
when its reviewed matches fall below a precision, when its last reviewed matches were all
rejected, or when it expires (its lifetime runs from when it started watching, renewed by every
confirmed match). Every worker computes the same answer from the same two topics.

No I/O here.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from agents.explore import Provenance
from agents.extractor.priors import STOPWORDS
from qexplorer.config import StandingSettings
from qexplorer.search.normalize import analyze, normalize, pinyin
from qexplorer.search.protocol import Hit
from schemas.models import (
    Detection,
    ModerationDecision,
    StandingQuery,
    detection_key,
    query_id,
    utcnow,
)


def standing_queries(seed_id: str, per_query: Sequence[tuple[str, Sequence[Hit]]],
                     provenance: Provenance, *, watch_from: datetime,
                     watch_offsets: Mapping[int, int], limit: int,
                     settings: StandingSettings,
                     common: Callable[[str], bool | None] = lambda query: None
                     ) -> list[StandingQuery]:
    """The standing queries of a seed just explored: its first ``settings.per_seed`` queries
    (in the extractor's order) that returned something. ``limit`` is how many results a query
    was allowed: a query that returned fewer would have returned any listing it scores at all
    (``min_score`` 0), one that returned ``limit`` only those scoring at least its last
    result. ``watch_offsets``: the listings positions the searched index held (each
    partition's next offset), where the queries take over. The search may have read past
    them: what it returned is recorded as ``detected`` and not detected twice. ``common``
    says whether a query's words are common in the index it searched (:func:`is_common`;
    None: not judged), recorded as ``common_at_start``."""
    out: list[StandingQuery] = []
    detected = sorted({h.listing_id for _, hits in per_query for h in hits} - {seed_id})
    for query, hits in per_query:
        kept = [h for h in hits if h.listing_id != seed_id]
        if len(out) >= settings.per_seed:
            break
        if not kept:
            continue
        out.append(StandingQuery(
            query_id=query_id(seed_id, query, provenance.model_version), query=query,
            seed_id=seed_id, extractor=provenance.extractor,
            model_version=provenance.model_version, prompt_version=provenance.prompt_version,
            min_score=max(0.0, kept[-1].score) if len(hits) >= limit else 0.0,
            results=len(kept), watch_from=watch_from, watch_offsets=dict(watch_offsets),
            detected=detected,
            ttl_s=settings.ttl_s, common_at_start=common(query),
            updated_by="explorer"))
    return out


def evidence_terms(query: str) -> list[str]:
    """The terms of a query that can carry evidence: its tokens as the index searches them
    (disguise folded), without stopwords and without tokens that have no letter or symbol in
    them (a number matches any listing holding it) or are one Latin letter."""
    normal = normalize(query)
    tokens = analyze(normal.text if normal.text is not None else query)
    return [t for t in dict.fromkeys(tokens) if t not in STOPWORDS and _can_be_evidence(t)]


def _can_be_evidence(token: str) -> bool:
    """A word (two or more characters, a letter among them), a Chinese character or a symbol
    such as an emoji; not a number, not one Latin letter."""
    if len(token) > 1:
        return any(ch.isalpha() for ch in token)
    return (token.isalpha() and not token.isascii()) or unicodedata.category(token) == "So"


def matched_terms(terms: Sequence[str], listing_terms: Set[str]) -> list[str]:
    """The query terms a listing holds (its tokens as the index holds them); a Chinese
    character also by its sound, as the search's pinyin phrases match a homophone."""
    return [t for t in terms
            if t in listing_terms or (len(t) == 1 and (sound := pinyin(t)) and
                                      sound[0] in listing_terms)]


#: A word held by fewer listings than this is never common (a small index has few of any).
COMMON_AT_LEAST = 20


def is_common(terms: Sequence[str], doc_freq: Callable[[str], int], listings: int,
              max_common: float) -> bool:
    """True when even the rarest of a query's ``terms`` (:func:`evidence_terms`) is held by
    more than ``max_common`` of the ``listings`` and :data:`COMMON_AT_LEAST` of them: a query
    of common words alone would match anything."""
    return bool(terms) and min(doc_freq(t) for t in terms) > max(max_common * listings,
                                                               COMMON_AT_LEAST)


def silenced(query: StandingQuery, common_now: bool) -> bool:
    """True when ``query`` fires on nothing because its words are common: they are now
    (``common_now``, :func:`is_common`) and were in the index it was explored on. A query
    whose words were rare there stays on however common its relistings make them; one made
    before that was recorded is judged on the index of the moment."""
    return query.common_at_start is not False and common_now


def has_evidence(terms: Sequence[str], listing_terms: Set[str], doc_freq: Callable[[str], int],
                 listings: int, min_share: float) -> bool:
    """True when a listing holding ``listing_terms`` is evidence for a query of ``terms``
    (:func:`evidence_terms`): the terms it holds carry at least ``min_share`` of the query's
    weight, a term's weight its inverse document frequency among ``listings``
    (``log((listings + 1) / (doc_freq + 1))``), so sharing only the query's commonest words
    is no evidence. A query without such terms (numbers, punctuation) never fires."""
    matched = set(matched_terms(terms, listing_terms))
    if not matched:
        return False
    weights = {t: math.log((listings + 1) / (doc_freq(t) + 1)) for t in terms}
    total = sum(weights.values())
    return total > 0 and sum(weights[t] for t in matched) >= min_share * total


def standing_detections(query: StandingQuery, hits: Sequence[Hit],
                        excluded: Set[str]) -> list[Detection]:
    """A standing query's matches among new listings: every hit scoring at least its
    ``min_score``, except its seed, items already confirmed toxic and what its seed's
    exploration already detected (the watcher keeps only the hits with evidence first)."""
    now = utcnow()
    detected = set(query.detected)
    return [Detection(
        key=detection_key(query.seed_id, hit.listing_id, query.model_version),
        seed_id=query.seed_id, listing_id=hit.listing_id, listing_title=hit.title[:1_000],
        listing_description=hit.description[:20_000], queries=[query.query],
        best_rank=hit.rank, best_score=hit.score, extractor=query.extractor,
        model_version=query.model_version, prompt_version=query.prompt_version,
        standing_query_id=query.query_id, detected_at=now)
        for hit in hits
        if hit.score >= query.min_score and hit.listing_id != query.seed_id
        and hit.listing_id not in excluded and hit.listing_id not in detected]


@dataclass
class Outcomes:
    """What moderators decided on the listings a query found (decisions in force)."""

    confirmed: int = 0
    rejected: int = 0
    last_confirmed_at: datetime | None = None
    #: confirm (True) / reject (False) of its reviewed matches, oldest first
    recent: list[bool] = field(default_factory=list)

    @property
    def reviewed(self) -> int:
        """Confirmed plus rejected (``unsure`` does not count)."""
        return self.confirmed + self.rejected

    @property
    def precision(self) -> float | None:
        """Confirmed over reviewed; None before any review."""
        return self.confirmed / self.reviewed if self.reviewed else None


def expires_at(query: StandingQuery, outcomes: Outcomes) -> datetime:
    """When the query expires: ``ttl_s`` after it started watching or after its last confirmed
    match, whichever is later."""
    start = query.watch_from
    if outcomes.last_confirmed_at is not None and outcomes.last_confirmed_at > start:
        start = outcomes.last_confirmed_at
    return start + timedelta(seconds=query.ttl_s)


def retirement(query: StandingQuery, outcomes: Outcomes, now: datetime,
               settings: StandingSettings) -> str | None:
    """Why the query no longer watches, or None while it is active."""
    if query.status == "retired":
        return f"retired by {query.updated_by or 'an operator'}" + \
            (f": {query.reason}" if query.reason else "")
    precision = outcomes.precision
    if outcomes.reviewed >= settings.min_reviews:
        if precision is not None and precision < settings.min_precision:
            return (f"precision {precision:.2f} over {outcomes.reviewed} reviewed matches, "
                    f"below {settings.min_precision:.2f}")
        last = outcomes.recent[-settings.min_reviews:]
        if not any(last):
            return f"its last {len(last)} reviewed matches were rejected"
    if now >= expires_at(query, outcomes):
        return ("expired without a confirmed match" if outcomes.confirmed == 0
                else "expired: no confirmed match in its lifetime")
    return None


@dataclass(frozen=True)
class StandingRow:
    """A standing query with its outcomes and state (what ``qexplorer standing list`` shows)."""

    query: StandingQuery
    outcomes: Outcomes
    expires_at: datetime
    retired: str | None

    @property
    def active(self) -> bool:
        """True while it watches new listings."""
        return self.retired is None


class StandingBook:
    """The standing queries (latest record of each) and the decisions on what they found.

    Fed from the ``standing-queries`` and ``moderation-decisions`` topics in order;
    :meth:`active` is what a worker matches new listings against."""

    def __init__(self, settings: StandingSettings) -> None:
        self.settings = settings
        self.queries: dict[str, StandingQuery] = {}
        self._decisions: dict[str, ModerationDecision] = {}  # by listing id, in force
        self._seen: set[str] = set()
        self._outcomes: dict[str, Outcomes] | None = None
        self._active: list[StandingQuery] | None = None
        self._active_until: datetime | None = None

    def put(self, record: StandingQuery) -> None:
        """Record a standing query's latest state."""
        self.queries[record.query_id] = record
        self._active = None

    def decide(self, decision: ModerationDecision) -> None:
        """Record a moderation decision (topic order; see ``decisions_in_force``)."""
        if decision.decision_id in self._seen:
            return
        self._seen.add(decision.decision_id)
        if decision.decision != "undo":
            self._decisions[decision.listing_id] = decision
        elif (found := self._decisions.get(decision.listing_id)) is not None \
                and found.decision_id == decision.supersedes:
            del self._decisions[decision.listing_id]
        else:
            return
        self._outcomes = None
        self._active = None

    def outcomes(self) -> dict[str, Outcomes]:
        """Query id -> what was decided on the listings it found."""
        if self._outcomes is None:
            by_query: dict[str, Outcomes] = {}
            for decision in sorted(self._decisions.values(), key=lambda d: d.decided_at):
                if decision.decision not in ("confirm", "reject"):
                    continue
                confirmed = decision.decision == "confirm"
                for qid in dict.fromkeys(decision.query_ids):
                    found = by_query.setdefault(qid, Outcomes())
                    found.recent.append(confirmed)
                    if confirmed:
                        found.confirmed += 1
                        found.last_confirmed_at = decision.decided_at
                    else:
                        found.rejected += 1
            self._outcomes = by_query
        return self._outcomes

    def rows(self, now: datetime | None = None) -> list[StandingRow]:
        """Every standing query with its outcomes and state, newest first."""
        now = now or utcnow()
        outcomes = self.outcomes()
        rows = []
        for query in self.queries.values():
            found = outcomes.get(query.query_id, Outcomes())
            rows.append(StandingRow(query, found, expires_at(query, found),
                                    retirement(query, found, now, self.settings)))
        return sorted(rows, key=lambda r: (r.query.watch_from, r.query.query_id), reverse=True)

    def active(self, now: datetime | None = None) -> list[StandingQuery]:
        """The queries to match new listings against: active ones, at most ``max_active``
        (the most precise first, unreviewed ones counted as precise as the threshold, then
        the newest). Recomputed when the book changes or the first of them expires."""
        now = now or utcnow()
        if self._active is not None and self._active_until is not None \
                and now < self._active_until:
            return self._active
        live = [r for r in self.rows(now) if r.active]
        floor = self.settings.min_precision
        live.sort(key=lambda r: (-(r.outcomes.precision if r.outcomes.precision is not None
                                   else floor), -r.query.watch_from.timestamp(),
                                 r.query.query_id))
        live = live[:self.settings.max_active]
        self._active = [r.query for r in live]
        self._active_until = min((r.expires_at for r in live), default=now + timedelta(days=1))
        return self._active

    def extend(self, records: Iterable[StandingQuery]) -> None:
        """Record several standing queries."""
        for record in records:
            self.put(record)
