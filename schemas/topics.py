"""The topic registry: every topic QExplorer reads or writes, declared once.

A :class:`TopicSpec` says what a topic is: its logical name, its contract (what
``schemas.codec.decode`` validates a message against), the key of a record, its partitions,
and how long the broker keeps it. Topic creation, the worker's start-up check, the codec, the
faust app, ``qexplorer tail`` and every producer read this registry; nothing else names a
topic. :class:`Topics` resolves it for one deployment: the configured prefix, partition count
and retention overrides.

Retention follows what a topic is for:

* ``listings`` is compacted by listing id: the latest record of every listing is kept, so a
  new worker or a rebuilt index can always be refilled from the topic. A deletion is a
  ``ListingDelete`` record (not a null tombstone): it is the listing's latest record, so
  compaction keeps it too and a replica that starts at any time still applies it.
* ``toxic-items``, ``search-feedback`` and ``dead-letter`` are kept without time limit: the
  labels, the training data and what still has to be replayed.
* ``dead-letter-replays`` is kept without time limit and not compacted: every replay of a
  dead letter (``--again`` ones included) is the audit trail, and it must outlive the dead
  letters it marks as replayed, which are kept without limit too.
* ``detections`` are kept for 30 days by default (the review queue's backlog).
* ``moderation-decisions`` is kept without time limit and not compacted: every decision,
  superseded ones included, is the reviewers' audit trail and the trainer's labels.
* ``model-rollouts`` is compacted: its last record is the model in service.
* ``model-registry`` is kept without time limit: every candidate the promotion gate judged,
  with its scores and the decision.
* ``standing-queries`` is compacted by query id: the latest record of every standing query
  (created active, or retired), so every worker holds the same set after a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.models import (
    DeadLetter,
    DeadLetterReplay,
    Detection,
    ListingEvent,
    ModelEvaluation,
    ModelRollout,
    ModerationDecision,
    SearchFeedback,
    StandingQuery,
    ToxicItem,
    dead_letter_id,
    explored_key,
)

#: ``retention.ms`` of a topic kept without time limit.
FOREVER = -1
_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: what it carries and how the broker keeps it."""

    name: str  # logical name; the topic's name is the deployment's prefix + this
    contract: Any  # a record model, or an annotated union of them
    key: Callable[[Any], str] = field(repr=False)  # a record's message key
    doc: str
    cleanup: Literal["compact", "delete"] = "delete"
    retention_ms: int | None = None  # None: the broker's default; FOREVER: no time limit
    single_partition: bool = False  # one total order (otherwise the configured count)

    def config(self, retention_ms: int | None = None) -> dict[str, str]:
        """The topic configuration to create it with (``retention_ms`` overrides)."""
        config = {"cleanup.policy": self.cleanup}
        retention = self.retention_ms if retention_ms is None else retention_ms
        if self.cleanup == "delete" and retention is not None:
            config["retention.ms"] = str(retention)
        return config


LISTINGS = TopicSpec(
    "listings", ListingEvent, key=lambda r: r.id, cleanup="compact",
    doc="Every listing's latest upsert or delete, keyed by listing id (the platform writes).")
TOXIC_ITEMS = TopicSpec(
    "toxic-items", ToxicItem, key=lambda r: r.id, retention_ms=FOREVER,
    doc="Confirmed toxic items: seeds to explore and labels to train on.")
DETECTIONS = TopicSpec(
    "detections", Detection, key=lambda r: r.key, retention_ms=30 * _DAY_MS,
    doc="Candidate toxic listings found from a seed, one per (seed, listing, model version).")
SEARCH_FEEDBACK = TopicSpec(
    "search-feedback", SearchFeedback, key=lambda r: explored_key(r.seed_id, r.model_version),
    retention_ms=FOREVER,
    doc="Every executed query and what it returned, keyed by (seed, model version).")
DEAD_LETTER = TopicSpec(
    "dead-letter", DeadLetter, key=lambda r: f"{r.topic}:{r.partition}:{r.offset}:{r.stage}",
    retention_ms=FOREVER, single_partition=True,
    doc="Messages that could not be processed, with their raw bytes.")
DEAD_LETTER_REPLAYS = TopicSpec(
    "dead-letter-replays", DeadLetterReplay,
    key=lambda r: dead_letter_id(r.dead_letter_partition, r.dead_letter_offset),
    retention_ms=FOREVER, single_partition=True,
    doc="Dead letters re-published to their topic: where, by whom and why, keyed by the "
        "dead letter's id.")
MODERATION_DECISIONS = TopicSpec(
    "moderation-decisions", ModerationDecision, key=lambda r: r.listing_id,
    retention_ms=FOREVER,
    doc="Moderators' decisions on detected listings, keyed by listing id (latest supersedes).")
MODEL_ROLLOUTS = TopicSpec(
    "model-rollouts", ModelRollout, key=lambda r: "extractor", cleanup="compact",
    single_partition=True, doc="The extractor model in service: its last record.")
MODEL_REGISTRY = TopicSpec(
    "model-registry", ModelEvaluation, key=lambda r: r.candidate_version,
    retention_ms=FOREVER, single_partition=True,
    doc="Every candidate model the promotion gate judged: scores, test and decision.")
STANDING_QUERIES = TopicSpec(
    "standing-queries", StandingQuery, key=lambda r: r.query_id, cleanup="compact",
    doc="Queries that keep watching new listings, keyed by query id (its latest state).")

#: Every topic, in the order they are listed and created.
REGISTRY: tuple[TopicSpec, ...] = (LISTINGS, TOXIC_ITEMS, DETECTIONS, SEARCH_FEEDBACK,
                                   MODERATION_DECISIONS, DEAD_LETTER, DEAD_LETTER_REPLAYS,
                                   MODEL_ROLLOUTS, MODEL_REGISTRY, STANDING_QUERIES)
BY_NAME: dict[str, TopicSpec] = {spec.name: spec for spec in REGISTRY}


def faust_internal_topics(app_id: str) -> list[str]:
    """The topics faust creates for an app on its own (its partition assignor's)."""
    return [f"{app_id}-__assignor-__leader"]


def check_retention(overrides: Mapping[str, int]) -> dict[str, int]:
    """Retention overrides by logical topic name, checked: the topic exists and is not
    compacted (ValueError otherwise)."""
    for name in overrides:
        spec = BY_NAME.get(name)
        if spec is None:
            raise ValueError(f"retention_ms names an unknown topic {name!r}: one of "
                             f"{', '.join(BY_NAME)}")
        if spec.cleanup == "compact":
            raise ValueError(f"{name} is compacted (its latest record per key is kept): "
                             "it has no retention to override")
    return dict(overrides)


class Topics:
    """The registry for one deployment: names with the prefix, partition counts, configs."""

    def __init__(self, prefix: str = "", partitions: int = 4, replication: int = 1,
                 retention_ms: Mapping[str, int] | None = None) -> None:
        """``retention_ms`` overrides the registry's retention of a topic (by logical name,
        -1 for no time limit); a compacted topic has none to override."""
        self.prefix = prefix
        self.replication = replication
        self._partitions = partitions
        self._retention = check_retention(retention_ms or {})

    def name(self, spec: TopicSpec) -> str:
        """The full name of a topic."""
        return f"{self.prefix}{spec.name}"

    @property
    def listings(self) -> str:
        """The listings topic."""
        return self.name(LISTINGS)

    @property
    def toxic_items(self) -> str:
        """The toxic-items topic."""
        return self.name(TOXIC_ITEMS)

    @property
    def detections(self) -> str:
        """The detections topic."""
        return self.name(DETECTIONS)

    @property
    def feedback(self) -> str:
        """The search-feedback topic."""
        return self.name(SEARCH_FEEDBACK)

    @property
    def decisions(self) -> str:
        """The moderation-decisions topic."""
        return self.name(MODERATION_DECISIONS)

    @property
    def dead_letter(self) -> str:
        """The dead-letter topic."""
        return self.name(DEAD_LETTER)

    @property
    def dead_letter_replays(self) -> str:
        """The dead-letter-replays topic."""
        return self.name(DEAD_LETTER_REPLAYS)

    @property
    def rollouts(self) -> str:
        """The model-rollouts topic."""
        return self.name(MODEL_ROLLOUTS)

    @property
    def registry(self) -> str:
        """The model-registry topic."""
        return self.name(MODEL_REGISTRY)

    @property
    def standing(self) -> str:
        """The standing-queries topic."""
        return self.name(STANDING_QUERIES)

    def spec(self, name: str) -> TopicSpec:
        """The spec of a topic by its full or its logical name (KeyError if not ours)."""
        found = next((spec for full, spec in self if full == name), None) or BY_NAME.get(name)
        if found is None:
            raise KeyError(f"{name!r} is not one of QExplorer's topics: "
                           f"{', '.join(self.all())}")
        return found

    def partitions(self, spec: TopicSpec) -> int:
        """The partition count a topic is created with."""
        return 1 if spec.single_partition else self._partitions

    def config(self, spec: TopicSpec) -> dict[str, str]:
        """The configuration a topic is created with."""
        return spec.config(self._retention.get(spec.name))

    def __iter__(self) -> Iterator[tuple[str, TopicSpec]]:
        return ((self.name(spec), spec) for spec in REGISTRY)

    def all(self) -> list[str]:
        """Every topic's full name."""
        return [name for name, _ in self]

    def __repr__(self) -> str:
        return f"Topics({', '.join(self.all())})"
