"""Training data from the live system: ``search-feedback`` joined with the moderators' labels.

A batch job: the topics are read from the beginning to their current end. The labels
(:class:`Labels`) are what moderators decided: a toxic item or a listing whose decision in force
is ``confirm`` is positive, a ``reject`` is negative, and everything else (unreviewed, ``unsure``,
undone) is unknown: never a negative. Every executed query is scored by the positive share of
the labelled listings among its top 10 results; a query none of whose results were reviewed
carries no evidence and is left out.

Seeds are split by time (:func:`split_by_time`): the newest reviewed seeds are held back for the
promotion gate (``trainer.gate``), and only the older ones are trained on. Records that fail
their contract are counted and skipped (the worker already dead-lettered anything it could not
read).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from agents.extractor.base import SeedText
from qexplorer.config import KafkaSettings
from schemas.codec import SchemaError, decode
from schemas.models import (
    ListingEvent,
    ModerationDecision,
    SearchFeedback,
    ToxicItem,
    decisions_in_force,
)
from schemas.topics import Topics
from trainer.dataset import BuildConfig, Candidate, feedback_rows
from trainer.train import write_rows

TOP = 10


@dataclass(frozen=True)
class TopicsSnapshot:
    """What the topics held when they were read."""

    feedback: list[SearchFeedback]
    toxic: list[ToxicItem]
    decisions: list[ModerationDecision]
    invalid: int


@dataclass(frozen=True)
class Labels:
    """The moderators' labels: confirmed toxic (positive) and rejected (negative) listings."""

    positive: frozenset[str]
    negative: frozenset[str]

    def of(self, listing_id: str) -> bool | None:
        """True (toxic), False (rejected) or None (unknown)."""
        if listing_id in self.positive:
            return True
        return False if listing_id in self.negative else None


@dataclass(frozen=True)
class TimeSplit:
    """Reviewed seeds split by confirmation time: train on the older, gate on the newer."""

    train: tuple[str, ...]
    holdout: tuple[str, ...]
    cutoff: datetime | None  # the newest training seed's confirmation; the holdout is after it


def _read(kafka: KafkaSettings, names: list[str]) -> list[list]:
    from qexplorer.kafka.io import read_to_end

    async def all_of():
        return await asyncio.gather(*(read_to_end(kafka, name) for name in names))

    return asyncio.run(all_of())


def read_topics(kafka: KafkaSettings, topics: Topics) -> TopicsSnapshot:
    """Read ``search-feedback``, ``toxic-items`` and ``moderation-decisions`` to their end."""
    raw = _read(kafka, [topics.feedback, topics.toxic_items, topics.decisions])
    out: tuple[list, list, list] = ([], [], [])
    invalid = 0
    for messages, contract, found in zip(raw, (SearchFeedback, ToxicItem, ModerationDecision),
                                         out, strict=True):
        for message in messages:
            try:
                found.append(decode(contract, message.value))
            except SchemaError:
                invalid += 1
    return TopicsSnapshot(*out, invalid)


def read_listings(kafka: KafkaSettings, topics: Topics) -> dict[str, dict]:
    """Every live listing (its latest upsert; deleted ones left out), by id."""
    (messages,) = _read(kafka, [topics.listings])
    live: dict[str, dict] = {}
    for message in messages:
        try:
            event = decode(ListingEvent, message.value)
        except SchemaError:
            continue
        if event.op == "delete":
            live.pop(event.id, None)
        else:
            live[event.id] = event.model_dump()
    return live


def labels_of(toxic: Iterable[ToxicItem], decisions: Iterable[ModerationDecision]) -> Labels:
    """The labels in force: toxic items and confirms positive, rejects negative (a listing that
    is a toxic item stays positive whatever a later decision on it says)."""
    in_force = decisions_in_force(decisions)
    positive = {t.id for t in toxic} | {i for i, d in in_force.items() if d.decision == "confirm"}
    negative = {i for i, d in in_force.items() if d.decision == "reject"} - positive
    return Labels(frozenset(positive), frozenset(negative))


def feedback_candidates(records: Iterable[SearchFeedback], labels: Labels
                        ) -> dict[str, list[Candidate]]:
    """Seed id -> its executed queries, each scored by the positive share of its labelled top-10
    results (the seed itself left out); a query without a labelled result is left out. A query
    executed again (by another model version) keeps its best-evidenced score."""
    out: dict[str, dict[str, Candidate]] = {}
    for record in records:
        top = [h.listing_id for h in record.results if h.listing_id != record.seed_id][:TOP]
        known = [label for label in map(labels.of, top) if label is not None]
        if not known:
            continue
        hits = sum(known)
        candidate = Candidate(record.query, f"feedback:{record.model_version}",
                              hits / len(known), hits)
        pool = out.setdefault(record.seed_id, {})
        previous = pool.get(record.query)
        if previous is None or (candidate.score, candidate.hits) > (previous.score,
                                                                     previous.hits):
            pool[record.query] = candidate
    return {seed: list(pool.values()) for seed, pool in out.items()}


def split_by_time(seeds: Mapping[str, ToxicItem], reviewed: Iterable[str], holdout: float
                  ) -> TimeSplit:
    """Hold back the newest ``holdout`` share of the reviewed seeds (at least one when there
    are two or more); seeds confirmed at the same instant as the cutoff stay in training."""
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout={holdout} must be within [0, 1)")
    ordered = sorted((seeds[s] for s in set(reviewed) if s in seeds),
                     key=lambda t: (t.confirmed_at, t.id))
    n_hold = math.ceil(holdout * len(ordered)) if len(ordered) >= 2 and holdout > 0 else 0
    train = ordered[: len(ordered) - n_hold]
    cutoff = train[-1].confirmed_at if train else None
    held = [t for t in ordered[len(train):] if cutoff is None or t.confirmed_at > cutoff]
    train += [t for t in ordered[len(train):] if cutoff is not None and t.confirmed_at <= cutoff]
    return TimeSplit(tuple(t.id for t in train), tuple(t.id for t in held), cutoff)


def rows_from_topics(snapshot: TopicsSnapshot, config: BuildConfig, holdout: float = 0.2
                     ) -> tuple[list[dict], list[dict], TimeSplit, Labels]:
    """SFT and DPO rows from the training side of a snapshot's time split."""
    labels = labels_of(snapshot.toxic, snapshot.decisions)
    seeds = {t.id: t for t in snapshot.toxic}
    candidates = feedback_candidates(snapshot.feedback, labels)
    split = split_by_time(seeds, candidates, holdout)
    texts = {i: SeedText(i, seeds[i].title, seeds[i].description) for i in split.train}
    sft, dpo = feedback_rows("kafka", texts,
                             {i: c for i, c in candidates.items() if i in texts}, config)
    return sft, dpo, split, labels


def split_record(split: TimeSplit) -> dict:
    """How a split is recorded with the data and in the model card (the gate reads it)."""
    return {"cutoff": split.cutoff.isoformat() if split.cutoff else None,
            "train_seeds": len(split.train), "holdout_seeds": list(split.holdout)}


def build_from_topics(kafka: KafkaSettings, topics: Topics, out: Path, config: BuildConfig,
                      holdout: float = 0.2) -> dict:
    """Read the topics, write ``sft.jsonl``, ``dpo.jsonl`` and ``stats.json`` into ``out``;
    returns the summary written to ``stats.json``."""
    return build_from_snapshot(read_topics(kafka, topics), out, config, holdout)


def build_from_snapshot(snapshot: TopicsSnapshot, out: Path, config: BuildConfig,
                        holdout: float = 0.2) -> dict:
    """:func:`build_from_topics` on a snapshot already read (or made by a replay)."""
    sft, dpo, split, labels = rows_from_topics(snapshot, config, holdout)
    summary = {
        "source": "topics", "config": asdict(config), "holdout": holdout,
        "feedback_records": len(snapshot.feedback), "toxic_items": len(snapshot.toxic),
        "decisions": len(snapshot.decisions), "invalid": snapshot.invalid,
        "positive_labels": len(labels.positive), "negative_labels": len(labels.negative),
        "split": split_record(split), "sft_rows": len(sft), "dpo_rows": len(dpo),
        "files": {"sft": write_rows(sft, out / "sft.jsonl"),
                  "dpo": write_rows(dpo, out / "dpo.jsonl")},
    }
    (out / "stats.json").write_text(json.dumps(summary, indent=2))
    return summary
