"""The topic registry (``schemas.topics``) and the pure parts of topic administration
(``qexplorer.kafka.admin.data_loss``, ``drift``), without a broker."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from qexplorer.kafka.admin import MANAGED, data_loss, drift
from schemas import codec
from schemas.codec import dead_letter, decode, encode
from schemas.models import (
    DeadLetterReplay,
    Detection,
    GateSet,
    ListingDelete,
    ListingUpsert,
    ModelEvaluation,
    ModelRollout,
    ModerationDecision,
    SearchFeedback,
    SearchHit,
    StandingQuery,
    ToxicItem,
    detection_key,
    explored_key,
    query_id,
    utcnow,
)
from schemas.topics import (
    BY_NAME,
    DEAD_LETTER,
    DEAD_LETTER_REPLAYS,
    DETECTIONS,
    FOREVER,
    LISTINGS,
    MODEL_REGISTRY,
    MODEL_ROLLOUTS,
    MODERATION_DECISIONS,
    REGISTRY,
    SEARCH_FEEDBACK,
    STANDING_QUERIES,
    TOXIC_ITEMS,
    Topics,
    TopicSpec,
    faust_internal_topics,
)

_DAY_MS = 24 * 3600 * 1000

#: Valid sample records of each topic, and the key each must get.
SAMPLES: dict[str, list[tuple[BaseModel, str]]] = {
    "listings": [
        (ListingUpsert(id="l-1", title="red bike", price=12.5), "l-1"),
        (ListingDelete(id="l-2"), "l-2"),
    ],
    "toxic-items": [(ToxicItem(id="t-1", title="c0ca ❄️", confirmed_by="mod"), "t-1")],
    "detections": [
        (Detection(key=detection_key("s-1", "l-1", "kw-1"), seed_id="s-1", listing_id="l-1",
                   queries=["snow"], best_rank=1, best_score=2.5, extractor="keywords",
                   model_version="kw-1", prompt_version="v1"),
         detection_key("s-1", "l-1", "kw-1")),
    ],
    "search-feedback": [
        (SearchFeedback(seed_id="s-1", query="snow", query_index=0, extractor="keywords",
                        model_version="kw-1", prompt_version="v1",
                        results=[SearchHit(listing_id="l-1", rank=1, score=2.5)]),
         explored_key("s-1", "kw-1")),
    ],
    "dead-letter": [
        (dead_letter(stage="decode-listing", error="bad", topic="t.listings", value=b"\xff",
                     key=b"k", partition=2, offset=40),
         "t.listings:2:40:decode-listing"),
        (dead_letter(stage="explore", error=ValueError("no query"), topic="t.toxic-items",
                     value=b"{}", partition=0, offset=7),
         "t.toxic-items:0:7:explore"),
    ],
    "dead-letter-replays": [
        (DeadLetterReplay(dead_letter_partition=0, dead_letter_offset=17,
                          dead_letter_key="t.listings:2:40:decode-listing", topic="t.listings",
                          partition=2, offset=57, reason="fixed in v2", replayed_by="alice"),
         "0:17"),
    ],
    "moderation-decisions": [
        (ModerationDecision(decision_id="d1234567", listing_id="l-9", decision="confirm",
                            text_hash="ab12", reviewer="alice"), "l-9"),
        (ModerationDecision(decision_id="d7654321", listing_id="l-9", decision="undo",
                            text_hash="ab12", reviewer="alice", supersedes="d1234567"), "l-9"),
    ],
    "model-rollouts": [
        (ModelRollout(extractor="keywords", model="tfidf"), "extractor"),
        (ModelRollout(extractor="openai", model="qx-sft-3", reason="better"), "extractor"),
    ],
    "model-registry": [
        (ModelEvaluation(
            evaluation_id="e" * 16, candidate_version="qx-dpo-1", candidate_model="/m/dpo",
            incumbent_version="keywords-yake", incumbent_extractor="keywords",
            sets=[GateSet(name="topics", seeds=40, skipped=2, candidate=0.7, incumbent=0.5,
                          difference=0.2, ci95=(0.1, 0.3))],
            seeds=40, difference=0.2, ci95=(0.1, 0.3), test="paired bootstrap",
            decision="promoted", reason="better beyond the noise"), "qx-dpo-1"),
    ],
    "standing-queries": [
        (StandingQuery(query_id=query_id("s-1", "snow tg", "kw-1"), query="snow tg",
                       seed_id="s-1", extractor="keywords", model_version="kw-1",
                       prompt_version="v1", min_score=2.5, results=10, watch_from=utcnow(),
                       ttl_s=3600.0), query_id("s-1", "snow tg", "kw-1")),
    ],
}


# --- the registry ------------------------------------------------------------------------------


def test_every_topic_has_a_unique_logical_name_and_samples_here() -> None:
    names = [spec.name for spec in REGISTRY]
    assert len(names) == len(set(names))
    assert set(names) == set(SAMPLES)  # a new topic must get samples here
    assert {spec.name: spec for spec in REGISTRY} == BY_NAME
    assert list(REGISTRY) == [LISTINGS, TOXIC_ITEMS, DETECTIONS, SEARCH_FEEDBACK,
                              MODERATION_DECISIONS, DEAD_LETTER, DEAD_LETTER_REPLAYS,
                              MODEL_ROLLOUTS, MODEL_REGISTRY, STANDING_QUERIES]
    assert all(spec.doc for spec in REGISTRY)


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda s: s.name)
def test_a_valid_record_decodes_under_its_topics_contract(spec: TopicSpec) -> None:
    for record, _ in SAMPLES[spec.name]:
        again = decode(spec.contract, encode(record))
        assert again == record and type(again) is type(record)


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda s: s.name)
def test_a_records_key_is_what_its_topic_is_keyed_by(spec: TopicSpec) -> None:
    for record, key in SAMPLES[spec.name]:
        assert spec.key(record) == key
        assert spec.key(decode(spec.contract, encode(record))) == key  # as a consumer sees it


def test_a_contract_refuses_another_topics_record() -> None:
    toxic = encode(SAMPLES["toxic-items"][0][0])
    with pytest.raises(codec.SchemaError):
        decode(LISTINGS.contract, toxic)
    with pytest.raises(codec.SchemaError):
        decode(DETECTIONS.contract, toxic)


def test_search_feedback_keys_separate_model_versions() -> None:
    record, _ = SAMPLES["search-feedback"][0]
    other = record.model_copy(update={"model_version": "kw-2"})
    assert SEARCH_FEEDBACK.key(record) != SEARCH_FEEDBACK.key(other)
    assert SEARCH_FEEDBACK.key(other) == explored_key("s-1", "kw-2")


def test_the_codecs_contracts_are_the_registrys() -> None:
    assert {spec.name: spec.contract for spec in REGISTRY} == codec.CONTRACTS
    assert all(codec.CONTRACTS[spec.name] is spec.contract for spec in REGISTRY)


# --- retention ---------------------------------------------------------------------------------


def test_listings_model_rollouts_and_standing_queries_are_compacted() -> None:
    topics = Topics()
    for spec in (LISTINGS, MODEL_ROLLOUTS, STANDING_QUERIES):
        assert spec.cleanup == "compact"
        assert topics.config(spec) == {"cleanup.policy": "compact"}  # no time limit to apply
        assert data_loss(topics.config(spec)) == []


@pytest.mark.parametrize("spec", [TOXIC_ITEMS, SEARCH_FEEDBACK, DEAD_LETTER,
                                  DEAD_LETTER_REPLAYS], ids=lambda s: s.name)
def test_labels_training_data_dead_letters_and_their_replays_are_kept_without_time_limit(
        spec: TopicSpec) -> None:
    assert FOREVER == -1
    assert Topics().config(spec) == {"cleanup.policy": "delete", "retention.ms": "-1"}


def test_detections_have_a_finite_retention() -> None:
    config = Topics().config(DETECTIONS)
    assert config["cleanup.policy"] == "delete"
    assert 0 < int(config["retention.ms"]) == DETECTIONS.retention_ms


def test_a_topic_without_a_retention_gets_the_brokers_default() -> None:
    spec = TopicSpec("scratch", ToxicItem, key=lambda r: r.id, doc="test")
    assert spec.config() == {"cleanup.policy": "delete"}
    assert spec.config(1000) == {"cleanup.policy": "delete", "retention.ms": "1000"}


# --- Topics: one deployment's names, partitions and configs ------------------------------------


def test_topics_names_carry_the_prefix() -> None:
    topics = Topics("t.", partitions=6, replication=3)
    assert (topics.listings, topics.toxic_items, topics.detections, topics.feedback,
            topics.dead_letter, topics.dead_letter_replays, topics.rollouts) == (
        "t.listings", "t.toxic-items", "t.detections", "t.search-feedback", "t.dead-letter",
        "t.dead-letter-replays", "t.model-rollouts")
    assert topics.all() == [f"t.{spec.name}" for spec in REGISTRY]
    assert list(topics) == [(f"t.{spec.name}", spec) for spec in REGISTRY]
    assert topics.name(DETECTIONS) == "t.detections"
    assert topics.replication == 3
    assert Topics().all() == [spec.name for spec in REGISTRY]


def test_a_spec_is_found_by_its_full_or_its_logical_name() -> None:
    topics = Topics("t.")
    for spec in REGISTRY:
        assert topics.spec(f"t.{spec.name}") is spec
        assert topics.spec(spec.name) is spec
    assert Topics().spec("dead-letter") is DEAD_LETTER


@pytest.mark.parametrize("name", ["t.unknown", "unknown", "x.listings", "feedback", "t.",
                                  "t.t.listings", ""])
def test_a_name_that_is_not_ours_is_refused(name: str) -> None:
    with pytest.raises(KeyError, match="not one of QExplorer's topics"):
        Topics("t.").spec(name)


def test_a_logical_name_starting_like_the_prefix_is_found() -> None:
    topics = Topics("search-")
    assert topics.spec("search-search-feedback") is SEARCH_FEEDBACK
    assert topics.spec("search-feedback") is SEARCH_FEEDBACK


def test_single_partition_topics_get_one_partition() -> None:
    topics = Topics("t.", partitions=6)
    for spec in REGISTRY:
        expected = 1 if spec in (DEAD_LETTER, DEAD_LETTER_REPLAYS, MODEL_ROLLOUTS,
                                 MODEL_REGISTRY) else 6
        assert spec.single_partition is (expected == 1)
        assert topics.partitions(spec) == expected


def test_retention_overrides_are_applied_to_their_topics_only() -> None:
    week = 7 * _DAY_MS
    topics = Topics(retention_ms={"detections": week, "search-feedback": 90 * _DAY_MS,
                                  "dead-letter": FOREVER})
    assert topics.config(DETECTIONS) == {"cleanup.policy": "delete", "retention.ms": str(week)}
    assert topics.config(SEARCH_FEEDBACK)["retention.ms"] == str(90 * _DAY_MS)
    assert topics.config(DEAD_LETTER)["retention.ms"] == "-1"
    assert topics.config(TOXIC_ITEMS)["retention.ms"] == "-1"  # not overridden
    assert topics.config(LISTINGS) == {"cleanup.policy": "compact"}
    assert Topics().config(DETECTIONS)["retention.ms"] == str(30 * _DAY_MS)  # no leak


@pytest.mark.parametrize(("overrides", "message"), [
    ({"detection": 1000}, "unknown topic 'detection'"),
    ({"t.detections": 1000}, "unknown topic"),
    ({"listings": 1000}, "listings is compacted"),
    ({"model-rollouts": -1}, "model-rollouts is compacted"),
    ({"detections": 1000, "listings": 1000}, "listings is compacted"),
])
def test_bad_retention_overrides_are_refused(overrides: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Topics(retention_ms=overrides)


def test_faust_internal_topics_name_the_assignor_topic() -> None:
    assert faust_internal_topics("qexplorer") == ["qexplorer-__assignor-__leader"]
    assert faust_internal_topics("t.app") == ["t.app-__assignor-__leader"]


# --- data loss and drift of live topics --------------------------------------------------------


@pytest.mark.parametrize("config", [
    {"cleanup.policy": "compact"},
    {"cleanup.policy": "compact", "retention.ms": "604800000"},  # compaction ignores time
    {"cleanup.policy": "compact,delete", "retention.ms": "-1", "retention.bytes": "-1"},
    {"cleanup.policy": "delete,compact", "retention.ms": "-1"},
    {"cleanup.policy": "compact, delete", "retention.ms": "-1", "retention.bytes": "-1"},
    # nothing is ever deleted (the registry would warn that it is not compacted)
    {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"},
])
def test_a_topic_keeping_every_keys_latest_record_loses_nothing(config: dict) -> None:
    assert data_loss(config) == []


@pytest.mark.parametrize(("config", "named"), [
    ({"cleanup.policy": "delete", "retention.ms": "604800000"}, ["cleanup.policy=delete",
                                                                "retention.ms=604800000"]),
    ({"retention.ms": "1000"}, ["cleanup.policy=delete", "retention.ms=1000"]),
    ({"cleanup.policy": "compact,delete", "retention.ms": "604800000",
      "retention.bytes": "-1"}, ["retention.ms=604800000"]),
    ({"cleanup.policy": "compact,delete", "retention.ms": "-1",
      "retention.bytes": "1073741824"}, ["retention.bytes=1073741824"]),
    ({"cleanup.policy": "compact,delete", "retention.ms": "5",
      "retention.bytes": "10"}, ["retention.ms=5", "retention.bytes=10"]),
])
def test_a_topic_that_would_delete_listings_gives_reasons(config: dict,
                                                           named: list[str]) -> None:
    reasons = data_loss(config)
    assert reasons
    for text in named:
        assert any(text in reason for reason in reasons), (text, reasons)


def test_drift_reports_a_differing_managed_setting() -> None:
    assert set(MANAGED) == {"cleanup.policy", "retention.ms"}
    expected = Topics().config(DETECTIONS)
    assert drift(DETECTIONS, expected, dict(expected)) == []
    assert drift(DETECTIONS, expected, {**expected, "segment.ms": "1"}) == []  # not managed
    [report] = drift(DETECTIONS, expected, {**expected, "retention.ms": "1000"})
    assert "detections" in report and "retention.ms" in report
    assert "'1000'" in report and repr(expected["retention.ms"]) in report
    [missing] = drift(TOXIC_ITEMS, Topics().config(TOXIC_ITEMS), {"cleanup.policy": "delete"})
    assert "retention.ms=None" in missing
    both = drift(TOXIC_ITEMS, Topics().config(TOXIC_ITEMS),
                 {"cleanup.policy": "compact", "retention.ms": "1"})
    assert len(both) == 2
    # a compacted topic's retention is not declared, so never drifts
    assert drift(LISTINGS, Topics().config(LISTINGS),
                 {"cleanup.policy": "compact", "retention.ms": "1"}) == []
