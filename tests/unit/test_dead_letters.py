"""Dead letters as pure logic (``streams.deadletters``): reading them back, joining them with
their replays, choosing which to replay and refusing the ones that must not be."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from schemas.codec import MAX_DEAD_LETTER_KEY_BYTES, MAX_MESSAGE_BYTES, dead_letter, decode, encode
from schemas.models import DeadLetter, DeadLetterReplay, ListingUpsert
from schemas.topics import DEAD_LETTER, DEAD_LETTER_REPLAYS, Topics
from streams.deadletters import (
    REPLAYABLE,
    Entry,
    Filters,
    Row,
    aware,
    describe_bytes,
    entry,
    join,
    listed,
    parse_id,
    parse_since,
    plan,
    printable,
    raw_bytes,
    refusal,
    replay_record,
    selected,
    summary,
    superseded,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
P = "t."
TOPICS = Topics(P)
LISTING = encode(ListingUpsert(id="l-1", title="red bike"))


def _dl(topic: str = "t.listings", partition: int | None = 2, offset: int | None = 40,
        stage: str = "decode-listing", value: bytes = b"{bad", key: bytes | None = b"l-1",
        failed_at: datetime = T0, error: str = "not valid JSON") -> DeadLetter:
    record = dead_letter(stage=stage, error=error, topic=topic, value=value, key=key,
                         partition=partition, offset=offset)
    return record.model_copy(update={"failed_at": failed_at})


def _entry(at: int, record: DeadLetter | None = None, **fields) -> Entry:
    """The dead letter at ``0:at`` on the dead-letter topic (``fields``: of ``_dl``)."""
    record = record if record is not None else _dl(**fields)
    return entry(0, at, int(T0.timestamp() * 1000), encode(record))


def _replay(of: Entry, *, offset: int = 100, partition: int = 2, at: datetime = T0,
            topic: str = "t.listings", key: str | None = None) -> DeadLetterReplay:
    return DeadLetterReplay(dead_letter_partition=of.partition, dead_letter_offset=of.offset,
                            dead_letter_key=key or of.key, topic=topic, partition=partition,
                            offset=offset, replayed_by="alice", replayed_at=at)


# --- reading -----------------------------------------------------------------------------------


def test_an_entry_is_its_dead_letter_at_its_own_position() -> None:
    e = _entry(17)
    assert e.id == "0:17" and e.record is not None and e.problem == ""
    assert e.key == "t.listings:2:40:decode-listing"
    assert e.source == ("t.listings", 2, 40)


@pytest.mark.parametrize("value", [b"{", None, b'{"schema_version": 1}',
                                   orjson.dumps({"schema_version": 2, "stage": "x"})])
def test_a_record_breaking_the_dead_letter_contract_is_unreadable_not_dropped(value) -> None:
    e = entry(0, 3, 0, value)
    assert e.record is None and e.problem and e.id == "0:3"
    assert e.key is None and e.source is None


def test_a_dead_letter_of_an_unknown_position_has_no_source() -> None:
    assert _entry(1, partition=None, offset=None).source is None


@pytest.mark.parametrize(("text", "parsed"), [("0:17", (0, 17)), (" 3:0 ", (3, 0))])
def test_an_id_is_partition_colon_offset(text: str, parsed: tuple[int, int]) -> None:
    assert parse_id(text) == parsed


@pytest.mark.parametrize("text", ["17", "0:", ":1", "a:1", "0:-1", "0:1:2", ""])
def test_a_malformed_id_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a dead letter id"):
        parse_id(text)


def test_raw_bytes_come_back_exactly() -> None:
    raw = b"\xff\x00 not json"
    assert raw_bytes(_dl(value=raw, key=b"k")) == (b"k", raw)
    assert raw_bytes(_dl(key=None)) == (None, b"{bad")
    forged = _dl().model_copy(update={"raw_value_b64": "not base64!"})
    with pytest.raises(ValueError, match="not valid base64"):
        raw_bytes(forged)


# --- joining with the replays ------------------------------------------------------------------


def test_a_replay_marks_its_dead_letter_and_every_other_of_the_same_message() -> None:
    first, again, other = _entry(1), _entry(2), _entry(3, offset=41)  # 1, 2: two workers
    replay = _replay(first)
    book = join([first, again, other], [replay])
    by_id = {row.id: row for row in book.rows}
    assert by_id["0:1"].replays == (replay,) and by_id["0:1"].replayed
    assert by_id["0:2"].via == (replay,) and by_id["0:2"].replays == ()
    assert by_id["0:2"].replayed and by_id["0:2"].last_replay == replay
    assert by_id["0:1"].duplicates == ("0:2",) and by_id["0:2"].duplicates == ("0:1",)
    assert not by_id["0:3"].replayed and by_id["0:3"].duplicates == ()
    assert book.orphans == ()


def test_a_replay_whose_key_differs_from_the_dead_letter_at_its_position_is_an_orphan() -> None:
    # the dead-letter topic was recreated: position 0:1 now holds another dead letter
    e = _entry(1)
    stale = _replay(e, key="t.toxic-items:0:7:explore")
    gone = _replay(_entry(9))
    book = join([e], [stale, gone])
    assert not book.rows[0].replayed and book.orphans == (stale, gone)


def test_a_replayed_message_that_failed_again_is_linked_both_ways() -> None:
    original = _entry(1)
    replay = _replay(original, offset=57)
    again = _entry(5, offset=57)  # the replay, dead-lettered when read at listings[2]@57
    rows = {r.id: r for r in join([original, again], [replay]).rows}
    assert rows["0:1"].failed_again == ("0:5",)
    assert rows["0:5"].replay_of == "0:1" and not rows["0:5"].replayed


def test_the_last_replay_is_the_latest_of_any_dead_letter_of_the_message() -> None:
    a, b = _entry(1), _entry(2)
    early, late = _replay(a, at=T0), _replay(b, offset=101, at=T0 + timedelta(hours=1))
    row = join([a, b], [early, late]).rows[0]
    assert row.replays == (early,) and row.via == (late,) and row.last_replay == late


def test_find_names_a_dead_letter_by_id() -> None:
    book = join([_entry(4)], [])
    assert book.find("0:4").id == "0:4"
    with pytest.raises(KeyError, match="no dead letter 0:5"):
        book.find("0:5")
    with pytest.raises(ValueError):
        book.find("four")


# --- choosing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "ago"), [
    ("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("2h", timedelta(hours=2)),
    ("7d", timedelta(days=7)), ("1w", timedelta(weeks=1)),
    ("1h30m", timedelta(minutes=90)), ("1.5h", timedelta(minutes=90))])
def test_since_takes_a_duration_back_from_now(text: str, ago: timedelta) -> None:
    assert parse_since(text, T0) == T0 - ago


@pytest.mark.parametrize(("text", "moment"), [
    ("2026-11-30T10:00:00Z", datetime(2026, 11, 30, 10, tzinfo=UTC)),
    ("2026-11-30T10:00:00+01:00", datetime(2026, 11, 30, 9, tzinfo=UTC)),
    ("2026-11-30T10:00", datetime(2026, 11, 30, 10, tzinfo=UTC)),  # no zone: UTC
    ("2026-11-30", datetime(2026, 11, 30, tzinfo=UTC))])
def test_since_takes_an_iso_time(text: str, moment: datetime) -> None:
    assert parse_since(text, T0) == moment


@pytest.mark.parametrize("text", ["", "yesterday", "5", "5y", "2h and a bit", "h2"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="neither an ISO time"):
        parse_since(text, T0)


def _book():
    listing = _entry(1)
    toxic = _entry(2, topic="t.toxic-items", stage="explore", partition=0, offset=7,
                   failed_at=T0 - timedelta(days=3))
    unreadable = entry(0, 3, 0, b"{")
    replayed = _entry(4, offset=50)
    return join([listing, toxic, unreadable, replayed], [_replay(replayed)])


@pytest.mark.parametrize(("filters", "ids"), [
    (Filters(), ["0:1", "0:2", "0:4"]),
    (Filters(topic="listings"), ["0:1", "0:4"]),  # the logical name
    (Filters(topic="t.toxic-items"), ["0:2"]),  # or the full one
    (Filters(topic="detections"), []),
    (Filters(stage="explore"), ["0:2"]),
    (Filters(since=T0 - timedelta(days=1)), ["0:1", "0:4"]),
    (Filters(since=datetime(2026, 11, 28, 12)), ["0:1", "0:2", "0:4"]),  # naive: UTC
    (Filters(replayed=True), ["0:4"]),
    (Filters(replayed=False), ["0:1", "0:2"]),
    (Filters(topic="listings", replayed=False), ["0:1"]),
])
def test_filters_choose_readable_dead_letters(filters: Filters, ids: list[str]) -> None:
    book = _book()
    assert [row.id for row in selected(book, filters, P)] == ids
    # list shows the unreadable record whatever the filters, in topic order
    assert [row.id for row in listed(book, filters, P)] == sorted([*ids, "0:3"])


def test_an_input_topic_of_this_deployment_may_be_replayed_to() -> None:
    for name in REPLAYABLE:
        row = join([_entry(1, topic=f"t.{name}")], []).rows[0]
        assert refusal(row, TOPICS) is None, name
    assert set(REPLAYABLE) == {"listings", "toxic-items", "moderation-decisions",
                               "model-rollouts"}


@pytest.mark.parametrize(("fields", "reason"), [
    ({"topic": "t.detections"}, "detections is not an input topic"),
    ({"topic": "t.search-feedback"}, "search-feedback is not an input topic"),
    ({"topic": "t.dead-letter"}, "dead-letter is not an input topic"),
    ({"topic": "t.dead-letter-replays"}, "dead-letter-replays is not an input topic"),
    ({"topic": "listings"}, "not one of this deployment's topics"),  # no prefix: another one
    ({"topic": "u.listings"}, "not one of this deployment's topics"),
    ({"topic": "t.listings", "partition": None}, "position on t.listings is unknown"),
    ({"topic": "t.model-rollouts", "offset": None}, "position on t.model-rollouts is unknown"),
    ({"value": b"x" * (MAX_MESSAGE_BYTES + 1)}, "raw bytes were cut"),
    ({"key": b"k" * (MAX_DEAD_LETTER_KEY_BYTES + 1)}, "raw bytes were cut"),
])
def test_a_dead_letter_that_must_not_be_replayed_says_why(fields: dict, reason: str) -> None:
    row = join([_entry(1, **fields)], []).rows[0]
    assert reason in refusal(row, TOPICS)


def test_seeds_of_unknown_position_may_be_replayed() -> None:
    # toxic-items holds no state per key: nothing newer to look for
    row = join([_entry(1, topic="t.toxic-items", partition=None, offset=None)], []).rows[0]
    assert refusal(row, TOPICS) is None


def test_unreadable_and_forged_dead_letters_are_refused() -> None:
    assert "unreadable" in refusal(join([entry(0, 1, 0, b"{")], []).rows[0], TOPICS)
    forged = _dl().model_copy(update={"raw_key_b64": "%%%"})
    assert "not valid base64" in refusal(join([_entry(2, forged)], []).rows[0], TOPICS)


def test_an_already_replayed_message_is_refused_unless_again() -> None:
    first, second = _entry(1), _entry(2)
    rows = join([first, second], [_replay(first, offset=77)]).rows
    for row in rows:  # replayed through itself, or through the other dead letter
        why = refusal(row, TOPICS)
        assert "already replayed" in why and "alice" in why and "t.listings[2]@77" in why
        assert "--again" in why
        assert refusal(row, TOPICS, again=True) is None


def test_a_plan_replays_one_message_once_and_keeps_the_order_asked() -> None:
    book = join([_entry(1), _entry(2), _entry(3, offset=41), _entry(4, topic="t.detections")],
                [])
    rows = [book.find(i) for i in ("0:3", "0:2", "0:1", "0:4", "0:2")]
    planned = plan(rows, TOPICS)
    assert [p.row.id for p in planned] == ["0:3", "0:2", "0:1", "0:4"]  # asked twice: once
    assert [p.go for p in planned] == [True, True, False, False]
    assert planned[2].duplicate_of == "0:2" and planned[2].refused is None
    assert "not an input topic" in planned[3].refused


def test_a_newer_record_of_the_key_supersedes_a_dead_letter_but_its_own_replays_do_not() -> None:
    e = _entry(1)  # listings[2]@40, key l-1
    row = join([e], []).rows[0]
    assert superseded(row, []) is None
    assert superseded(row, [(41, b"l-2"), (42, None)]) is None  # other keys
    assert superseded(row, [(41, b"l-2"), (45, b"l-1")]) == 45
    assert superseded(row, [(39, b"l-1")]) is None  # older
    replayed = join([e, _entry(2)], [_replay(e, offset=45)]).rows
    for row in replayed:  # its own replay, or the replay of another dead letter of it
        assert superseded(row, [(45, b"l-1")]) is None
        assert superseded(row, [(45, b"l-1"), (46, b"l-1")]) == 46
    keyless = join([_entry(3, key=None)], []).rows[0]
    assert superseded(keyless, [(41, None), (42, b"l-1")]) is None


def test_a_replay_record_names_its_dead_letter_and_where_the_message_went() -> None:
    row = join([entry(0, 17, 0, encode(_dl()))], []).rows[0]
    record = replay_record(row, topic="t.listings", partition=2, offset=57, reason="fixed",
                           by="alice", at=T0)
    assert (record.dead_letter_partition, record.dead_letter_offset) == (0, 17)
    assert record.dead_letter_key == DEAD_LETTER.key(row.entry.record)
    assert (record.topic, record.partition, record.offset) == ("t.listings", 2, 57)
    assert (record.reason, record.replayed_by, record.replayed_at) == ("fixed", "alice", T0)
    assert DEAD_LETTER_REPLAYS.key(record) == "0:17"
    assert decode(DeadLetterReplay, encode(record)) == record
    long = replay_record(row, topic="t.listings", partition=2, offset=57, reason="r" * 5000,
                         by="b" * 500)
    assert len(long.reason) == 1_000 and len(long.replayed_by) == 200


# --- showing -----------------------------------------------------------------------------------


def test_text_for_a_terminal_has_no_escape_sequences() -> None:
    hostile = "ok\x1b[31m red\x07\r\nnext\u202e"
    assert "\x1b" not in printable(hostile) and "\\x1b" in printable(hostile)
    assert "\n" not in printable(hostile) and "\n" in printable(hostile, lines=True)
    assert "\x1b" not in printable(hostile, lines=True)
    assert printable("abcdef", 4) == "abc…" and printable("abc", 4) == "abc"


def test_raw_bytes_are_shown_as_text_when_they_are_utf8() -> None:
    assert describe_bytes(None) is None
    assert describe_bytes("冰糖 ❄️".encode()) == {"bytes": 13, "utf8": "冰糖 ❄️"}
    binary = describe_bytes(b"\xff\xfe" + bytes(100))
    assert binary["utf8"] is None and binary["bytes"] == 102
    assert base64.b64decode(binary["base64"]) == b"\xff\xfe" + bytes(100)
    assert binary["hex_preview"].startswith("ff fe 00") and len(binary["hex_preview"]) == 64 * 3 - 1


def test_a_summary_has_everything_list_and_show_print() -> None:
    e = _entry(1, value=LISTING)
    replay = _replay(e)
    row = join([e, _entry(2)], [replay]).rows[0]
    data = summary(row, raw=True)
    assert data["id"] == "0:1" and data["topic"] == "t.listings"
    assert (data["source_partition"], data["source_offset"]) == (2, 40)
    assert data["replayed"] and data["replays"][0]["dead_letter"] == "0:1"
    assert data["replays"][0]["offset"] == 100 and data["duplicates"] == ["0:2"]
    assert data["raw_value"]["utf8"] == LISTING.decode()
    assert data["raw_key"] == {"bytes": 3, "utf8": "l-1"}
    assert orjson.loads(orjson.dumps(data)) == data  # JSON as it is
    assert "raw_value" not in summary(row)
    unreadable = summary(join([entry(0, 3, 0, b"{")], []).rows[0], raw=True)
    assert unreadable["id"] == "0:3" and "not valid JSON" in unreadable["unreadable"]


def test_aware_reads_a_naive_time_as_utc() -> None:
    assert aware(datetime(2026, 1, 1)) == datetime(2026, 1, 1, tzinfo=UTC)
    assert aware(T0) is T0


def test_rows_are_plain_values() -> None:
    row = Row(_entry(1))
    assert not row.replayed and row.last_replay is None and row.id == "0:1"
