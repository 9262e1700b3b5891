"""Topic contracts: valid records round-trip, bad bytes fail with a readable reason."""

from __future__ import annotations

import base64

import orjson
import pytest

from schemas.codec import MAX_MESSAGE_BYTES, SchemaError, dead_letter, decode, encode
from schemas.export import JSON_DIR, json_schemas
from schemas.models import (
    Detection,
    ListingDelete,
    ListingEvent,
    ListingUpsert,
    ModelRollout,
    SearchFeedback,
    SearchHit,
    ToxicItem,
    detection_key,
)


def _listing(**fields) -> bytes:
    base = {"schema_version": 1, "op": "upsert", "id": "l-1", "title": "red bike"}
    return orjson.dumps({**base, **fields})


def test_listing_roundtrip_keeps_every_field() -> None:
    listing = ListingUpsert(id="l-1", title="冰糖 ❄️ snow", description="dm", category="food",
                            price=12.5, seller="s1", language="zh")
    assert decode(ListingEvent, encode(listing)) == listing


def test_delete_event_is_its_own_type() -> None:
    event = decode(ListingEvent, encode(ListingDelete(id="l-9")))
    assert isinstance(event, ListingDelete) and event.id == "l-9"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON/UTF-8"),
        (b"[1,2]", "expected a JSON object"),
        (_listing(schema_version=2), "unsupported schema_version 2"),
        (orjson.dumps({"op": "upsert", "id": "x", "title": "t"}), "unsupported schema_version"),
        (_listing(id=7), "id: Input should be a valid string"),
        (_listing(price="12"), "price: Input should be a valid number"),
        (_listing(price=-1), "price"),
        (_listing(colour="red"), "colour: Extra inputs are not permitted"),
        (_listing(id="a\x00b"), "id: String should match pattern"),
        (_listing(id=""), "id"),
        (_listing(title="x" * 1001), "title"),
        (_listing(op="merge"), "op"),
        (orjson.dumps({"schema_version": 1, "op": "upsert", "id": "x"}), "title: Field required"),
        (b"x" * (MAX_MESSAGE_BYTES + 1), "exceeds"),
        (None, "empty message"),
    ],
)
def test_bad_listing_bytes_raise_a_readable_schema_error(raw: bytes | None, reason: str) -> None:
    with pytest.raises(SchemaError, match=None) as info:
        decode(ListingEvent, raw)
    assert reason in str(info.value)


def test_timestamps_parse_from_iso_strings_but_numbers_stay_numbers() -> None:
    event = decode(ListingEvent, _listing(created_at="2026-01-02T03:04:05Z", price=3))
    assert event.created_at.year == 2026 and event.price == 3.0


def test_toxic_item_requires_who_confirmed_it() -> None:
    raw = orjson.dumps({"schema_version": 1, "id": "t1", "title": "x"})
    with pytest.raises(SchemaError, match="confirmed_by"):
        decode(ToxicItem, raw)


def test_detection_key_is_deterministic_and_separates_versions() -> None:
    assert detection_key("s", "l", "m1") == detection_key("s", "l", "m1")
    assert detection_key("s", "l", "m1") != detection_key("s", "l", "m2")
    assert detection_key("s1", "l", "m") != detection_key("s", "1l", "m")


def test_detection_and_feedback_roundtrip() -> None:
    detection = Detection(key=detection_key("s", "l", "v"), seed_id="s", listing_id="l",
                          queries=["snow"], best_rank=1, best_score=2.5, extractor="keywords",
                          model_version="v", prompt_version="v1")
    assert decode(Detection, encode(detection)) == detection
    feedback = SearchFeedback(seed_id="s", query="snow", query_index=0, extractor="keywords",
                              model_version="v", prompt_version="v1",
                              results=[SearchHit(listing_id="l", rank=1, score=2.5)])
    assert decode(SearchFeedback, encode(feedback)) == feedback


@pytest.mark.parametrize("name", ["keywords", "transformers", "openai", "vllm-2", "my_backend"])
def test_a_rollout_names_any_backend_by_a_plain_name(name: str) -> None:
    rollout = ModelRollout(extractor=name, model="m")
    assert decode(ModelRollout, encode(rollout)) == rollout


@pytest.mark.parametrize("name", ["", "Keywords", "1st", "-x", "a b", "a.b", "x\n", "a" * 65])
def test_a_rollout_refuses_a_name_no_backend_can_have(name: str) -> None:
    raw = orjson.dumps({"schema_version": 1, "extractor": name})
    with pytest.raises(SchemaError, match="extractor"):
        decode(ModelRollout, raw)


def test_dead_letter_keeps_the_raw_bytes() -> None:
    raw = b"\xff not json"
    record = dead_letter(stage="decode-listing", error=SchemaError("bad"), topic="listings",
                         value=raw, key=b"k", partition=2, offset=40)
    assert base64.b64decode(record.raw_value_b64) == raw
    assert record.error == "SchemaError: bad" and record.offset == 40


def test_exported_json_schemas_are_up_to_date() -> None:
    for name, schema in json_schemas().items():
        committed = orjson.loads((JSON_DIR / name).read_bytes())
        assert committed == schema, f"{name} is stale: run `qexplorer schemas`"


def test_json_schema_validates_what_the_codec_writes() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schemas()["listings.v1.schema.json"]
    good = orjson.loads(encode(ListingUpsert(id="a", title="b", price=1.0)))
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "unknown": 1}, schema)
