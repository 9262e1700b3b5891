"""Dead letters, the operator's side: read them back, join them with their replays, replay them.

A dead letter (``schemas.models.DeadLetter``) keeps a message's raw key and value, where it
came from and why it failed. Its id is its own position on the dead-letter topic,
``partition:offset`` (``schemas.models.dead_letter_id``). A replay re-publishes the raw key and
value unchanged to the topic the message came from, on the partition it came from; the workers
read it like any new message (still bad: it is dead-lettered again, as a new record). Once the
broker has acknowledged the message (acks=all), a ``DeadLetterReplay`` record on
``dead-letter-replays`` says where it went, by whom and why. A crash between the two leaves a
message re-published but not recorded: a later replay publishes it again (at least once, like
the rest of the system; the workers' keys make a repeat harmless).

One message is often dead-lettered more than once: every worker's replica reads all of
``listings`` (and of ``model-rollouts``), so each refuses a bad listing (or rollout) on its
own. Dead letters of the same message (same topic, partition and offset) are one message to
replay: a replay of any of them counts for all, and one run replays it once.

Only the input topics are replayed to (:data:`REPLAYABLE`), the records that come from
outside the workers and that nothing else will ever send again:

* ``listings``: the platform's listings (a listing refused by a contract or a worker bug
  since fixed is indexed once replayed);
* ``toxic-items``: moderators' confirmations, i.e. seeds (one whose exploration failed is
  explored when replayed; exploration is idempotent per seed and model version);
* ``moderation-decisions``: the reviewers' decisions (labels and audit trail);
* ``model-rollouts``: a rollout a worker refused (its server was down, its URL not yet
  trusted) is offered to the workers again.

On ``listings``, ``moderation-decisions`` and ``model-rollouts`` the latest record of a key is
the state (a listing's text, the decision in force, the model in service), so replaying an old
record over a newer one would roll the state back: a replay is refused when a newer record of
the same key follows the dead letter's message on its partition (:func:`superseded`), replays
of the same message aside. The workers' own outputs (``detections``, ``search-feedback``,
``standing-queries``) and the gate's (``model-registry``) are derived: they are made again by
exploring or judging again, never by re-sending stale bytes. ``dead-letter`` and
``dead-letter-replays`` are never replayed to (a loop, or a forged record).

Pure functions decide everything (selection, filters, refusals, replay records, the join of
dead letters with their replays); the ``async`` functions at the end only read and write Kafka.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import TopicPartition

from qexplorer.config import KafkaSettings, Settings
from qexplorer.kafka import clients
from qexplorer.kafka.io import read_to_end, topic_partitions
from schemas.codec import SchemaError, decode, encode
from schemas.models import DeadLetter, DeadLetterReplay, dead_letter_id, utcnow
from schemas.topics import DEAD_LETTER, DEAD_LETTER_REPLAYS, Topics, TopicSpec

#: The topics a dead letter may be replayed to (logical names), each with whether its latest
#: record of a key is state that an older record must not overwrite (see the module doc).
REPLAYABLE: dict[str, bool] = {
    "listings": True,
    "toxic-items": False,
    "moderation-decisions": True,
    "model-rollouts": True,
}
#: What ``schemas.codec.dead_letter`` appends to the error when it kept only part of the raw
#: bytes: such a dead letter no longer holds the message, so it cannot be replayed.
_CUT = re.compile(r"\[raw (?:value|key) cut to its first \d+ of \d+ bytes"
                  r"(?:; key cut to its first \d+ of \d+ bytes)?\]$")
_ID = re.compile(r"^(\d+):(\d+)$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
#: Bytes of a raw value shown in hex when it is not text.
HEX_PREVIEW = 64

Source = tuple[str, int, int]  # (topic, partition, offset) of the message a dead letter keeps


class ReplayError(RuntimeError):
    """A replay that cannot start (the replays topic is missing)."""


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One record of the dead-letter topic: its position and the dead letter, or why it is
    unreadable (it breaks the ``DeadLetter`` contract)."""

    partition: int
    offset: int
    timestamp_ms: int  # when the broker wrote it
    record: DeadLetter | None
    problem: str = ""

    @property
    def id(self) -> str:
        """``partition:offset`` on the dead-letter topic."""
        return dead_letter_id(self.partition, self.offset)

    @property
    def key(self) -> str | None:
        """Its key as the registry makes it (None when unreadable)."""
        return DEAD_LETTER.key(self.record) if self.record is not None else None

    @property
    def source(self) -> Source | None:
        """Where the message it keeps was read (None when unknown or unreadable)."""
        r = self.record
        if r is None or r.partition is None or r.offset is None:
            return None
        return r.topic, r.partition, r.offset


def entry(partition: int, offset: int, timestamp_ms: int, value: bytes | None) -> Entry:
    """The entry of one message of the dead-letter topic, readable or not."""
    try:
        return Entry(partition, offset, timestamp_ms, decode(DeadLetter, value))
    except SchemaError as exc:
        return Entry(partition, offset, timestamp_ms, None, str(exc))


def parse_id(text: str) -> tuple[int, int]:
    """``partition:offset`` of a dead letter id (ValueError otherwise)."""
    match = _ID.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a dead letter id (partition:offset, e.g. 0:17)")
    return int(match.group(1)), int(match.group(2))


def raw_bytes(record: DeadLetter) -> tuple[bytes | None, bytes]:
    """The message key and value a dead letter keeps (ValueError when not base64)."""
    try:
        key = (base64.b64decode(record.raw_key_b64, validate=True)
               if record.raw_key_b64 is not None else None)
        return key, base64.b64decode(record.raw_value_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("its raw key or value is not valid base64") from None


# --- joining with the replays --------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A dead letter with what happened to it since."""

    entry: Entry
    replays: tuple[DeadLetterReplay, ...] = ()  # of this dead letter, in topic order
    via: tuple[DeadLetterReplay, ...] = ()  # of another dead letter of the same message
    duplicates: tuple[str, ...] = ()  # ids of the other dead letters of the same message
    replay_of: str | None = None  # this message is a replay of that dead letter
    failed_again: tuple[str, ...] = ()  # dead letters of this one's replayed messages

    @property
    def id(self) -> str:
        """The dead letter's id."""
        return self.entry.id

    @property
    def replayed(self) -> bool:
        """True when its message was re-published (through this dead letter or another)."""
        return bool(self.replays or self.via)

    @property
    def last_replay(self) -> DeadLetterReplay | None:
        """The latest replay of its message, through any of its dead letters."""
        every = [*self.replays, *self.via]
        return max(every, key=lambda r: r.replayed_at) if every else None


@dataclass(frozen=True)
class Book:
    """Every dead letter, joined with the replays."""

    rows: tuple[Row, ...]
    orphans: tuple[DeadLetterReplay, ...] = ()  # replays naming no dead letter there is
    unreadable_replays: int = 0  # records of dead-letter-replays that break their contract

    def find(self, dead_letter: str) -> Row:
        """The row of a dead letter id (ValueError if malformed, KeyError if there is none)."""
        wanted = dead_letter_id(*parse_id(dead_letter))
        for row in self.rows:
            if row.id == wanted:
                return row
        raise KeyError(f"no dead letter {wanted}")


def join(entries: Iterable[Entry], replays: Iterable[DeadLetterReplay],
         unreadable_replays: int = 0) -> Book:
    """Dead letters (in topic order) joined with the replays: a replay belongs to the dead
    letter at its position only when the key matches too (a recreated dead-letter topic
    reuses positions); one that matches none is an orphan."""
    entries = list(entries)
    at = {(e.partition, e.offset): e for e in entries}
    own: dict[str, list[DeadLetterReplay]] = defaultdict(list)
    orphans = []
    for replay in replays:
        found = at.get((replay.dead_letter_partition, replay.dead_letter_offset))
        if found is None or found.key != replay.dead_letter_key:
            orphans.append(replay)
        else:
            own[found.id].append(replay)
    same: dict[Source, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.source is not None:
            same[e.source].append(e)
    target_of = {(r.topic, r.partition, r.offset): e_id
                 for e_id, rs in own.items() for r in rs}
    rows = []
    for e in entries:
        others = [o for o in same.get(e.source, []) if o is not e] if e.source else []
        failed_again = [o.id for r in own.get(e.id, [])
                        for o in same.get((r.topic, r.partition, r.offset), [])]
        rows.append(Row(
            entry=e, replays=tuple(own.get(e.id, ())),
            via=tuple(r for o in others for r in own.get(o.id, ())),
            duplicates=tuple(o.id for o in others),
            replay_of=target_of.get(e.source) if e.source else None,
            failed_again=tuple(failed_again)))
    return Book(tuple(rows), tuple(orphans), unreadable_replays)


# --- choosing ------------------------------------------------------------------------------


def aware(moment: datetime) -> datetime:
    """A time stamp with a time zone (UTC when it has none)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_since(text: str, now: datetime) -> datetime:
    """The instant ``--since`` names: an ISO time (no zone: UTC) or a duration back from
    ``now`` (``90s``, ``15m``, ``2h``, ``7d``, ``1w``, ``1h30m``); ValueError otherwise."""
    text = text.strip()
    parts = _DURATION.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        return now - timedelta(seconds=sum(float(n) * _UNIT_S[u] for n, u in parts))
    try:
        return aware(datetime.fromisoformat(text))
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO time (2026-11-30T10:00:00Z) nor a "
                         "duration (90s, 15m, 2h, 7d, 1h30m)") from None


@dataclass(frozen=True)
class Filters:
    """What ``list`` and ``replay --all`` choose (None: any)."""

    topic: str | None = None  # the source topic, by its logical or its full name
    stage: str | None = None
    since: datetime | None = None  # failed at or after
    replayed: bool | None = None

    def matches(self, row: Row, prefix: str) -> bool:
        """True when a readable dead letter passes every filter (an unreadable one never)."""
        r = row.entry.record
        return r is not None and (
            (self.topic is None or r.topic in (self.topic, prefix + self.topic))
            and (self.stage is None or r.stage == self.stage)
            and (self.since is None or aware(r.failed_at) >= aware(self.since))
            and (self.replayed is None or row.replayed == self.replayed))


def listed(book: Book, filters: Filters, prefix: str) -> list[Row]:
    """The rows ``list`` shows: those passing the filters and every unreadable one (nothing
    in it can be trusted to filter on, and it must not go unnoticed)."""
    return [row for row in book.rows
            if row.entry.record is None or filters.matches(row, prefix)]


def selected(book: Book, filters: Filters, prefix: str) -> list[Row]:
    """The rows ``replay --all`` considers: readable ones passing the filters."""
    return [row for row in book.rows if filters.matches(row, prefix)]


def target_spec(record: DeadLetter, topics: Topics) -> TopicSpec | None:
    """The spec of the topic a dead letter came from, when it is one of this deployment's
    (its full name, prefix included)."""
    return next((spec for name, spec in topics if name == record.topic), None)


def refusal(row: Row, topics: Topics, *, again: bool = False) -> str | None:
    """Why a dead letter must not be replayed (None: it may). Whether a newer record
    supersedes it is checked against the topic (:func:`superseded`)."""
    r = row.entry.record
    if r is None:
        return f"unreadable: {row.entry.problem}"
    spec = target_spec(r, topics)
    if spec is None:
        return (f"{r.topic!r} is not one of this deployment's topics (prefix "
                f"{topics.prefix!r})")
    if spec.name not in REPLAYABLE:
        return (f"{spec.name} is not an input topic (only {', '.join(REPLAYABLE)} are "
                "replayed to)")
    if _CUT.search(r.error):
        return "its raw bytes were cut when it was dead-lettered: it no longer holds the message"
    try:
        raw_bytes(r)
    except ValueError as exc:
        return str(exc)
    if REPLAYABLE[spec.name] and (r.partition is None or r.offset is None):
        return (f"its position on {r.topic} is unknown, so a newer record of its key "
                "cannot be ruled out")
    last = row.last_replay
    if last is not None and not again:
        when = aware(last.replayed_at).astimezone(UTC)
        return (f"already replayed {when:%Y-%m-%d %H:%M:%S} by {last.replayed_by} to "
                f"{last.topic}[{last.partition}]@{last.offset} (--again to replay it anyway)")
    return None


@dataclass(frozen=True)
class Planned:
    """A dead letter chosen for replay, and what became of it."""

    row: Row
    refused: str | None = None  # why it is not replayed
    duplicate_of: str | None = None  # its message is replayed in this run through that id
    replay: DeadLetterReplay | None = None  # recorded once the broker had the message

    @property
    def go(self) -> bool:
        """True when it is to be replayed."""
        return self.refused is None and self.duplicate_of is None


def plan(rows: Sequence[Row], topics: Topics, *, again: bool = False) -> list[Planned]:
    """Each chosen dead letter, refused or not; of several of one message, the first goes."""
    out = []
    first: dict[Source, str] = {}
    seen: set[str] = set()
    for row in rows:
        if row.id in seen:
            continue
        seen.add(row.id)
        reason = refusal(row, topics, again=again)
        source = row.entry.source
        if reason is None and source is not None and source in first:
            out.append(Planned(row, duplicate_of=first[source]))
            continue
        if reason is None and source is not None:
            first[source] = row.id
        out.append(Planned(row, refused=reason))
    return out


def superseded(row: Row, later: Iterable[tuple[int, bytes | None]]) -> int | None:
    """The offset of a newer record of the dead letter's key on the partition its message
    came from (``later``: offset and key of the records after it there), replays of the
    same message aside; None when there is none, or when the message had no key."""
    r = row.entry.record
    key, _ = raw_bytes(r)
    if key is None or r.offset is None:
        return None
    ours = {(x.topic, x.partition, x.offset) for x in (*row.replays, *row.via)}
    return next((offset for offset, other in later
                 if offset > r.offset and other == key
                 and (r.topic, r.partition, offset) not in ours), None)


def replay_record(row: Row, *, topic: str, partition: int, offset: int, reason: str, by: str,
                  at: datetime | None = None) -> DeadLetterReplay:
    """The record saying a dead letter's message was re-published at ``partition:offset``."""
    return DeadLetterReplay(
        dead_letter_partition=row.entry.partition, dead_letter_offset=row.entry.offset,
        dead_letter_key=row.entry.key[:1_000], topic=topic[:200], partition=partition,
        offset=offset, reason=reason[:1_000], replayed_by=by[:200],
        replayed_at=at or utcnow())


# --- showing -------------------------------------------------------------------------------


def printable(text: str, limit: int | None = None, *, lines: bool = False) -> str:
    """``text`` safe for a terminal: control characters (escape sequences) written as
    escapes, newlines kept only with ``lines``, cut to ``limit`` characters with an ellipsis."""
    keep = "\n\t" if lines else ""
    text = "".join(ch if ch.isprintable() or ch in keep else repr(ch)[1:-1] for ch in text)
    if limit is not None and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def describe_bytes(raw: bytes | None) -> dict[str, Any] | None:
    """Raw bytes for a person: their size, the text when they are UTF-8, else base64 and
    the first bytes in hex."""
    if raw is None:
        return None
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    out: dict[str, Any] = {"bytes": len(raw), "utf8": text}
    if text is None:
        out["base64"] = base64.b64encode(raw).decode()
        out["hex_preview"] = raw[:HEX_PREVIEW].hex(" ")
    return out


def _replay_json(replay: DeadLetterReplay) -> dict[str, Any]:
    return {"dead_letter": dead_letter_id(replay.dead_letter_partition,
                                          replay.dead_letter_offset),
            **replay.model_dump(mode="json", exclude={"schema_version"})}


def summary(row: Row, *, raw: bool = False) -> dict[str, Any]:
    """A dead letter as JSON data: its id, the dead letter's fields (the raw bytes decoded
    with ``raw``), its replays and related dead letters."""
    e, r = row.entry, row.entry.record
    out: dict[str, Any] = {"id": e.id, "partition": e.partition, "offset": e.offset,
                           "written_at": datetime.fromtimestamp(e.timestamp_ms / 1000, UTC)
                           .isoformat()}
    if r is None:
        return {**out, "unreadable": e.problem}
    out.update(key=e.key, topic=r.topic, source_partition=r.partition, source_offset=r.offset,
               stage=r.stage, failed_at=aware(r.failed_at).isoformat(), error=r.error,
               replayed=row.replayed, replays=[_replay_json(x) for x in row.replays],
               replayed_via=[_replay_json(x) for x in row.via],
               duplicates=list(row.duplicates), replay_of=row.replay_of,
               failed_again=list(row.failed_again))
    if raw:
        try:
            key, value = raw_bytes(r)
        except ValueError as exc:
            out.update(raw_error=str(exc), raw_key_b64=r.raw_key_b64,
                       raw_value_b64=r.raw_value_b64)
        else:
            out.update(raw_key=describe_bytes(key), raw_value=describe_bytes(value))
    return out


# --- Kafka ---------------------------------------------------------------------------------


async def read_book(settings: Settings) -> Book:
    """Every dead letter and every replay, from the start of both topics to their end."""
    topics = settings.topics
    entries = [entry(m.partition, m.offset, m.timestamp, m.value)
               for m in await read_to_end(settings.kafka, topics.dead_letter)]
    replays, bad = [], 0
    for m in await read_to_end(settings.kafka, topics.dead_letter_replays):
        try:
            replays.append(decode(DeadLetterReplay, m.value))
        except SchemaError:
            bad += 1
    return join(entries, replays, bad)


async def existing_partitions(kafka: KafkaSettings, names: Iterable[str]) -> dict[str, set[int]]:
    """The partitions of each of ``names`` that exists (from the cluster metadata, which
    never creates a topic)."""
    consumer = clients.reader(kafka)
    await consumer.start()
    try:
        return {name: {tp.partition for tp in found} for name in names
                if (found := await topic_partitions(consumer, name, wait_s=0))}
    finally:
        await consumer.stop()


async def keys_after(kafka: KafkaSettings, topic: str, partition: int, after: int,
                     timeout_s: float = 120.0) -> list[tuple[int, bytes | None]]:
    """Offset and key of every record of one partition after offset ``after``, to its end
    as of this call."""
    consumer = clients.reader(kafka)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        if after + 1 >= end:
            return []
        consumer.seek(tp, after + 1)
        out: list[tuple[int, bytes | None]] = []
        deadline = time.monotonic() + timeout_s
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}[{partition}] took over {timeout_s}s")
            for messages in (await consumer.getmany(tp, timeout_ms=200)).values():
                out += [(m.offset, m.key) for m in messages if m.offset < end]
        return out
    finally:
        await consumer.stop()


async def check_superseded(kafka: KafkaSettings, planned: list[Planned],
                           topics: Topics) -> list[Planned]:
    """``planned`` with a refusal for each dead letter a newer record of its key supersedes
    (on the topics where the latest record of a key is state); one read a partition."""
    todo = [p for p in planned if p.go and REPLAYABLE[target_spec(p.row.entry.record,
                                                                  topics).name]]
    checked = {id(p) for p in todo}
    starts: dict[tuple[str, int], int] = {}
    for p in todo:
        r = p.row.entry.record
        where = (r.topic, r.partition)
        starts[where] = min(starts.get(where, r.offset), r.offset)
    later = {where: await keys_after(kafka, *where, after)
             for where, after in starts.items()}
    out = []
    for p in planned:
        r = p.row.entry.record
        found = (superseded(p.row, later[(r.topic, r.partition)])
                 if id(p) in checked else None)
        out.append(p if found is None else replace(
            p, refused=f"a newer record of its key is on {r.topic}[{r.partition}]@{found}: "
                       "replaying would overwrite it"))
    return out


async def replay(settings: Settings, rows: Sequence[Row], *, again: bool = False,
                 dry_run: bool = False, reason: str = "", by: str) -> list[Planned]:
    """Replay the dead letters of ``rows`` (as :func:`plan` and :func:`check_superseded`
    allow): each message is re-published to the partition it came from (when it still
    exists), and once the broker has it, its replay is recorded. ``dry_run``: only decide.
    ReplayError, before anything is sent, when the replays topic does not exist."""
    topics = settings.topics
    planned = await check_superseded(settings.kafka, plan(rows, topics, again=again), topics)
    going = [p for p in planned if p.go]
    if not going:
        return planned
    wanted = {topics.dead_letter_replays, *(p.row.entry.record.topic for p in going)}
    partitions = await existing_partitions(settings.kafka, wanted)
    if topics.dead_letter_replays not in partitions:
        raise ReplayError(f"topic {topics.dead_letter_replays} does not exist (replays could "
                          "not be recorded): run `qexplorer topics create`")
    planned = [replace(p, refused=f"topic {p.row.entry.record.topic} does not exist")
               if p.go and p.row.entry.record.topic not in partitions else p for p in planned]
    if dry_run:
        return planned
    producer = clients.producer(settings.kafka)
    await producer.start()
    out = []
    try:
        for p in planned:
            if not p.go:
                out.append(p)
                continue
            r = p.row.entry.record
            key, value = raw_bytes(r)
            target = r.partition if r.partition in partitions[r.topic] else None
            sent = await producer.send_and_wait(r.topic, value=value, key=key,
                                                partition=target)
            record = replay_record(p.row, topic=r.topic, partition=sent.partition,
                                   offset=sent.offset, reason=reason, by=by)
            await producer.send_and_wait(topics.dead_letter_replays,
                                         key=DEAD_LETTER_REPLAYS.key(record).encode(),
                                         value=encode(record))
            out.append(replace(p, replay=record))
    finally:
        await producer.stop()
    return out
