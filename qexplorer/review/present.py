"""What the review pages show, computed from the queue: pure functions, no HTML.

* :func:`highlight` cuts a listing's text into segments and marks the words the queries
  matched, analysed the way the index analyses them (words, single Han characters and symbols
  such as emoji, case-insensitive, disguises folded: ``ｃａｓｈ`` is marked for ``cash``), so
  what is marked is what the search matched;
* :func:`model_reports` is the online measurement per model version: detections sent to
  review, listings reviewed, confirmed and rejected, the review precision (confirmed share of
  confirmed + rejected), and confirmed listings (new toxic items) per day;
* :func:`bar_chart` lays out a per-day series as bars for an SVG the template draws.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date

import regex

from qexplorer.review.queue import ReviewQueue
from qexplorer.search.normalize import TOKEN_PATTERN, normalize

_TOKENS = regex.compile(TOKEN_PATTERN, regex.V1)


def folded_term(token: str) -> str:
    """A token as the index holds it (disguise folding, its first reading)."""
    normal = normalize(token).text
    return normal.split()[0] if normal and normal.strip() else token.lower()


def query_terms(queries: list[str]) -> set[str]:
    """The lowercased index tokens of some queries, as written and as the index holds them."""
    terms = {m.group().lower() for q in queries for m in _TOKENS.finditer(q)}
    for q in queries:
        normal = normalize(q)
        terms.update(m.group() for text in (normal.text or "", *normal.variants)
                     for m in _TOKENS.finditer(text))
    return terms


def highlight(text: str, terms: set[str]) -> list[tuple[str, bool]]:
    """``text`` as (segment, matched) pairs, in order; joined they give ``text`` back."""
    segments: list[tuple[str, bool]] = []
    at = 0
    for match in _TOKENS.finditer(text):
        if match.group().lower() in terms or folded_term(match.group()) in terms:
            if match.start() > at:
                segments.append((text[at:match.start()], False))
            segments.append((match.group(), True))
            at = match.end()
    if at < len(text):
        segments.append((text[at:], False))
    return segments


@dataclass
class ModelReport:
    """The review outcome of one model version's detections."""

    version: str
    detections: int = 0  # detection records (one per seed and listing)
    listings: int = 0  # distinct listings sent to review
    reviewed: int = 0  # of those, decided (confirm, reject or unsure)
    confirmed: int = 0
    rejected: int = 0
    unsure: int = 0
    confirmed_by_day: dict[date, int] = field(default_factory=dict)
    reviewed_by_day: dict[date, int] = field(default_factory=dict)

    @property
    def precision(self) -> float | None:
        """Confirmed share of the confirmed and rejected listings (None before any)."""
        judged = self.confirmed + self.rejected
        return self.confirmed / judged if judged else None

    @property
    def waiting(self) -> int:
        """Listings still waiting for a decision."""
        return self.listings - self.reviewed


def model_reports(queue: ReviewQueue) -> list[ModelReport]:
    """One :class:`ModelReport` per model version that made detections, newest activity
    first. A listing found by several versions counts for each."""
    reports: dict[str, ModelReport] = {}
    last_seen: Counter[str] = Counter()
    for item in queue.items.values():
        decision = queue.decisions.get(item.listing_id)
        judged = decision is not None and decision.text_hash == item.text_hash
        for version in item.model_versions:
            report = reports.setdefault(version, ModelReport(version))
            found = [d for d in item.findings.values() if d.model_version == version]
            report.detections += len(found)
            report.listings += 1
            last_seen[version] = max(last_seen[version],
                                     max(d.detected_at.timestamp() for d in found))
            if not judged:
                continue
            day = decision.decided_at.date()
            report.reviewed += 1
            report.reviewed_by_day[day] = report.reviewed_by_day.get(day, 0) + 1
            if decision.decision == "confirm":
                report.confirmed += 1
                report.confirmed_by_day[day] = report.confirmed_by_day.get(day, 0) + 1
            elif decision.decision == "reject":
                report.rejected += 1
            else:
                report.unsure += 1
    return sorted(reports.values(), key=lambda r: (-last_seen[r.version], r.version))


@dataclass(frozen=True)
class Bar:
    """One bar of a chart, in SVG user units."""

    x: float
    y: float
    width: float
    height: float
    day: str
    value: int
    reviewed: int
    reviewed_y: float  # the day's reviewed listings, drawn lighter behind
    reviewed_height: float


def bar_chart(report: ModelReport, width: float = 640, height: float = 200) -> list[Bar]:
    """Bars of confirmed listings per day in front of the day's reviewed listings, one per day
    from the first to the last day with a review (days without one are zero-height bars),
    scaled to the busiest day's reviews; a bar is at most 60 units wide."""
    days = sorted(report.reviewed_by_day)
    if not days:
        return []
    span = [date.fromordinal(o) for o in range(days[0].toordinal(), days[-1].toordinal() + 1)]
    top = max(report.reviewed_by_day.values())
    slot = min(width / len(span), 75.0)
    bars = []
    for i, day in enumerate(span):
        value = report.confirmed_by_day.get(day, 0)
        reviewed = report.reviewed_by_day.get(day, 0)
        h, rh = height * value / top, height * reviewed / top
        bars.append(Bar(x=i * slot + slot * 0.1, y=height - h, width=slot * 0.8, height=h,
                        day=day.isoformat(), value=value, reviewed=reviewed,
                        reviewed_y=height - rh, reviewed_height=rh))
    return bars
