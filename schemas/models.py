"""The topic contracts: one versioned pydantic model per Kafka topic.

Every record carries ``schema_version``. Models forbid unknown fields and bound every text, so
a record that passes validation is safe for the index, the prompt and the trainer. The JSON
Schema files in ``schemas/json/`` are generated from these models (``qexplorer schemas``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: Bound on ids: printable, no control characters, at most 128 characters.
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
Title = Annotated[str, StringConstraints(max_length=1_000)]
Description = Annotated[str, StringConstraints(max_length=20_000)]
ShortText = Annotated[str, StringConstraints(max_length=200)]
QueryText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
#: Version 1 of a contract: the JSON integer 1 (strict, so neither ``true`` nor ``1.0``, which
#: a ``Literal[1]`` lets through when validating JSON). The JSON Schema still says ``const: 1``.
SchemaVersion = Annotated[int, Field(strict=True, ge=1, le=1, json_schema_extra={"const": 1})]


def utcnow() -> datetime:
    """Timezone-aware now, the time stamp of every record this project writes."""
    return datetime.now(UTC)


class _Record(BaseModel):
    # strict: "12" is not a price and 7 is not an id; time stamps still parse from ISO strings
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --- listings ------------------------------------------------------------------------------


class ListingUpsert(_Record):
    """A listing created or edited on the platform (key: the listing id)."""

    schema_version: SchemaVersion = 1
    op: Literal["upsert"] = "upsert"
    id: Id
    title: Title
    description: Description = ""
    category: ShortText = ""
    price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    seller: ShortText = ""
    created_at: datetime = Field(default_factory=utcnow, strict=False)
    language: Annotated[str, StringConstraints(max_length=16)] = "und"


class ListingDelete(_Record):
    """A listing removed from the platform (key: the listing id)."""

    schema_version: SchemaVersion = 1
    op: Literal["delete"] = "delete"
    id: Id
    deleted_at: datetime = Field(default_factory=utcnow, strict=False)


ListingEvent = Annotated[ListingUpsert | ListingDelete, Field(discriminator="op")]


# --- toxic-items ---------------------------------------------------------------------------


class ToxicItem(_Record):
    """A listing a moderator confirmed as toxic: a seed to explore and a label for training."""

    schema_version: SchemaVersion = 1
    id: Id
    title: Title
    description: Description = ""
    category: ShortText = ""
    cluster: ShortText | None = Field(default=None, description="Campaign/cluster if known.")
    confirmed_by: ShortText = Field(description="Moderator or process that confirmed it.")
    confirmed_at: datetime = Field(default_factory=utcnow, strict=False)
    language: Annotated[str, StringConstraints(max_length=16)] = "und"


# --- detections ----------------------------------------------------------------------------


def detection_key(seed_id: str, listing_id: str, model_version: str) -> str:
    """Deterministic id of a detection: one per (seed, listing, model version)."""
    raw = "\x1f".join((seed_id, listing_id, model_version)).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def query_id(seed_id: str, query: str, model_version: str) -> str:
    """Deterministic id of a query as one seed's model version wrote it: the key of a standing
    query, and what a moderation decision names for every query that found its listing."""
    raw = "\x1f".join(("query", seed_id, query, model_version)).encode()
    return hashlib.sha256(raw).hexdigest()[:24]


def explored_key(seed_id: str, model_version: str) -> str:
    """Key of a seed's search feedback: a seed is explored once per model version, and a
    worker reads these keys to know which (seed, model version) pairs are done."""
    return f"{model_version}\x1f{seed_id}"


class Detection(_Record):
    """A candidate toxic listing found from a seed, for review (key: ``key``)."""

    schema_version: SchemaVersion = 1
    key: Annotated[str, StringConstraints(min_length=8, max_length=64)]
    seed_id: Id
    listing_id: Id
    listing_title: Title = ""
    listing_description: Description = Field(
        default="", description="The listing's text as it was searched, so a reviewer or a "
                                "subscriber needs nothing else to judge it.")
    queries: list[QueryText] = Field(min_length=1, max_length=64)
    best_rank: int = Field(ge=1)
    best_score: float = Field(allow_inf_nan=False)  # JSON has no NaN/inf: orjson writes null
    extractor: ShortText
    model_version: ShortText
    prompt_version: ShortText
    standing_query_id: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="Set when a standing query found the listing as it was "
                                  "published (its query_id); None for a seed's exploration.")
    detected_at: datetime = Field(default_factory=utcnow, strict=False)


# --- moderation-decisions ------------------------------------------------------------------

#: What a moderator decided. ``undo`` withdraws the reviewer's previous decision on the listing
#: (it goes back to the queue; ``supersedes`` names the decision withdrawn).
DecisionKind = Literal["confirm", "reject", "unsure", "undo"]


def text_hash(title: str, description: str) -> str:
    """Fingerprint of a listing's text: a decided listing comes back to review only when its
    text changes."""
    return hashlib.sha256(f"{title}\x1f{description}".encode()).hexdigest()[:16]


class ModerationDecision(_Record):
    """A moderator's decision on a detected listing (key: the listing id; a later decision on
    the same listing supersedes an earlier one). A confirm becomes a toxic item (a seed); a
    reject is a negative label for training."""

    schema_version: SchemaVersion = 1
    decision_id: Annotated[str, StringConstraints(min_length=8, max_length=64)] = Field(
        description="Unique id: a decision read twice is applied once.")
    listing_id: Id
    decision: DecisionKind
    text_hash: Annotated[str, StringConstraints(max_length=64)] = Field(
        description="text_hash() of the listing text the reviewer saw.")
    category: ShortText | None = None
    reason: Annotated[str, StringConstraints(max_length=1_000)] = ""
    reviewer: ShortText
    detection_keys: list[Annotated[str, StringConstraints(min_length=8, max_length=64)]] = \
        Field(default_factory=list, max_length=256)
    seed_ids: list[Id] = Field(default_factory=list, max_length=256)
    model_versions: list[ShortText] = Field(default_factory=list, max_length=64)
    query_ids: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list, max_length=256,
        description="query_id() of every query that found the listing: the standing queries' "
                    "precision is counted from these.")
    supersedes: Annotated[str, StringConstraints(max_length=64)] | None = None
    decided_at: datetime = Field(default_factory=utcnow, strict=False)


def decisions_in_force(decisions: Iterable[ModerationDecision]
                       ) -> dict[str, ModerationDecision]:
    """Listing id -> the decision in force on it, from decisions in topic order: a later
    decision supersedes an earlier one, an ``undo`` withdraws the decision it names (the
    listing is undecided again), and a decision read twice counts once."""
    seen: set[str] = set()
    current: dict[str, ModerationDecision] = {}
    for decision in decisions:
        if decision.decision_id in seen:
            continue
        seen.add(decision.decision_id)
        if decision.decision != "undo":
            current[decision.listing_id] = decision
        elif (found := current.get(decision.listing_id)) is not None \
                and found.decision_id == decision.supersedes:
            del current[decision.listing_id]
    return current


# --- search-feedback -----------------------------------------------------------------------


class SearchHit(_Record):
    """One result of an executed query."""

    listing_id: Id
    rank: int = Field(ge=1)
    score: float = Field(allow_inf_nan=False)


class SearchFeedback(_Record):
    """One executed query and what it returned: the trainer's raw material (key: seed id)."""

    schema_version: SchemaVersion = 1
    seed_id: Id
    query: QueryText
    query_index: int = Field(ge=0)
    extractor: ShortText
    model_version: ShortText
    prompt_version: ShortText
    results: list[SearchHit] = Field(max_length=1000)
    executed_at: datetime = Field(default_factory=utcnow, strict=False)


# --- standing-queries ----------------------------------------------------------------------

StandingStatus = Literal["active", "retired"]


class StandingQuery(_Record):
    """A query that keeps watching new listings after its seed was explored (key:
    ``query_id``; the topic is compacted, the last record of a query is its state). A new
    listing matches when the query scores it at least ``min_score``: the score of the last
    result the query returned in its exploration, i.e. the listing would have been among those
    results. How a query retires itself (expiry, rejected matches) is computed by every worker
    from ``moderation-decisions``; a ``retired`` record is an operator's (or an audit's) final
    word."""

    schema_version: SchemaVersion = 1
    query_id: Annotated[str, StringConstraints(min_length=8, max_length=64)]
    query: QueryText
    seed_id: Id
    extractor: ShortText
    model_version: ShortText
    prompt_version: ShortText
    min_score: float = Field(ge=0, allow_inf_nan=False)
    results: int = Field(ge=0, description="Results the query returned in its exploration.")
    watch_from: datetime = Field(
        strict=False, description="When its seed was explored: its lifetime starts here.")
    watch_offsets: dict[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, max_length=4096,
        description="listings partition -> the first offset its exploration did not search: "
                    "it matches the listings from there on (a partition not named: all).")
    detected: list[Id] = Field(
        default_factory=list, max_length=10_000,
        description="The listings its seed's exploration returned: already detected, so not "
                    "detected again (the exploration's search may have read past "
                    "watch_offsets).")
    ttl_s: float = Field(gt=0, allow_inf_nan=False,
                         description="Lifetime after watch_from, or after its last confirmed "
                                     "match.")
    common_at_start: bool | None = Field(
        default=None,
        description="Its rarest word was common in the index it was explored on: while it is "
                    "common still, it fires on nothing. False: never silenced by how common "
                    "its words become (its own relistings make them so). None: not recorded, "
                    "judged on the index of the moment.")
    status: StandingStatus = "active"
    reason: Annotated[str, StringConstraints(max_length=1_000)] = ""
    updated_by: ShortText = ""
    updated_at: datetime = Field(default_factory=utcnow, strict=False)


# --- dead-letter ---------------------------------------------------------------------------


class DeadLetter(_Record):
    """A message that could not be processed, with its raw bytes so it can be replayed."""

    schema_version: SchemaVersion = 1
    stage: ShortText = Field(description="Where it failed: decode-listing, explore, ...")
    error: Annotated[str, StringConstraints(max_length=2_000)]
    topic: ShortText
    partition: int | None = None
    offset: int | None = None
    raw_key_b64: str | None = None
    raw_value_b64: str = Field(description="The original message value, base64.")
    failed_at: datetime = Field(default_factory=utcnow, strict=False)


# --- dead-letter-replays -------------------------------------------------------------------


def dead_letter_id(partition: int, offset: int) -> str:
    """The id an operator names a dead letter by: its own ``partition:offset`` on the
    dead-letter topic (the key of its replays)."""
    return f"{partition}:{offset}"


class DeadLetterReplay(_Record):
    """A dead letter's raw key and value re-published unchanged to the topic it came from
    (key: the dead letter's id, :func:`dead_letter_id`). Written only once the broker has
    acknowledged the re-published message; every replay of a dead letter is kept."""

    schema_version: SchemaVersion = 1
    dead_letter_partition: int = Field(ge=0, description="The dead letter's partition on the "
                                                         "dead-letter topic.")
    dead_letter_offset: int = Field(ge=0, description="The dead letter's offset there.")
    dead_letter_key: Annotated[str, StringConstraints(max_length=1_000)] = Field(
        description="The dead letter's message key (topic:partition:offset:stage), so a "
                    "replay never attaches to another record at the same position.")
    topic: ShortText = Field(description="Where the message was re-published (full name).")
    partition: int = Field(ge=0)
    offset: int = Field(ge=0, description="Where the broker wrote the re-published message.")
    reason: Annotated[str, StringConstraints(max_length=1_000)] = ""
    replayed_by: ShortText
    replayed_at: datetime = Field(default_factory=utcnow, strict=False)


# --- model-rollouts ------------------------------------------------------------------------


class ModelRollout(_Record):
    """Switch the workers' query extractor to another model (key: ``"extractor"``; the topic
    is compacted, the last record is the model in service). Workers verify the new model
    answers before switching and never drop a seed on the way. Secrets never travel here:
    the API key stays in each worker's settings and ``base_url`` must be one the workers
    are configured to allow."""

    schema_version: SchemaVersion = 1
    extractor: Annotated[str, StringConstraints(max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")] = \
        Field(description="An extractor backend the workers have (keywords, transformers, "
                          "openai); a worker refuses a name it does not know.")
    model: ShortText | None = Field(
        default=None, description="Served model name (openai), directory or hub id.")
    base_url: ShortText | None = Field(
        default=None, description="openai: the server's API root; default the worker's own.")
    model_version: ShortText | None = Field(
        default=None, description="Recorded version; default the served name / model card.")
    reason: ShortText = ""
    issued_by: ShortText = ""
    issued_at: datetime = Field(default_factory=utcnow, strict=False)


# --- model-registry ------------------------------------------------------------------------


class GateSet(_Record):
    """The promotion gate on one evaluation set: per-seed precision@10 of both models, paired."""

    name: ShortText
    seeds: int = Field(ge=0, description="Seeds scored for both models (the pairs).")
    skipped: int = Field(ge=0, description="Seeds without labelled results for one of them.")
    candidate: float = Field(allow_inf_nan=False)
    incumbent: float = Field(allow_inf_nan=False)
    difference: float = Field(allow_inf_nan=False, description="candidate - incumbent.")
    ci95: tuple[float, float] = Field(description="Paired bootstrap interval of difference.")


class ModelEvaluation(_Record):
    """A candidate model judged by the promotion gate against the model in service (key: the
    candidate's version). Only a ``promoted`` candidate is rolled out."""

    schema_version: SchemaVersion = 1
    evaluation_id: Annotated[str, StringConstraints(min_length=8, max_length=64)]
    candidate_version: ShortText
    candidate_model: Annotated[str, StringConstraints(max_length=1_000)]
    incumbent_version: ShortText
    incumbent_extractor: ShortText
    incumbent_model: Annotated[str, StringConstraints(max_length=1_000)] | None = None
    sets: list[GateSet] = Field(max_length=64)
    seeds: int = Field(ge=0, description="Paired seeds over every set.")
    difference: float = Field(allow_inf_nan=False, description="Pooled candidate - incumbent.")
    ci95: tuple[float, float]
    test: Annotated[str, StringConstraints(max_length=1_000)]
    decision: Literal["promoted", "refused"]
    reason: Annotated[str, StringConstraints(max_length=1_000)]
    decided_by: ShortText = ""
    decided_at: datetime = Field(default_factory=utcnow, strict=False)
