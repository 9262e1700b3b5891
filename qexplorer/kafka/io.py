"""Publishing and reading topics with plain clients (no faust): publish records, read a topic
to its end, follow it, validate rows of a file against a topic's contract.

What a platform service or a review tool would run, and what the worker's own consumers build
on (clients from :mod:`qexplorer.kafka.clients`). :func:`publish` keys every record as the
topic registry says. Rows from files are validated against the topic contract before they are
sent, so a publisher learns about a bad row at once instead of from the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel, ValidationError

from qexplorer.config import KafkaSettings
from qexplorer.kafka import clients
from schemas.codec import encode
from schemas.models import ListingDelete, ListingUpsert, ToxicItem
from schemas.topics import Topics, TopicSpec


@dataclass(frozen=True, slots=True)
class RowError:
    """A row of an input file that does not satisfy the topic contract."""

    line: int
    error: str


def read_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Rows of a JSONL or CSV file as (line number, dict)."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                yield number, {k: v for k, v in row.items() if v not in (None, "")}
        return
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, orjson.loads(line)


def _coerce(row: dict) -> dict:
    row = {k: v for k, v in row.items() if k not in ("harmful", "cluster_label")}
    if isinstance(row.get("price"), str):
        row["price"] = float(row["price"])
    if "text" in row and "title" not in row:
        row["title"] = row.pop("text")
    row.setdefault("schema_version", 1)
    return row


def rows_to_records(rows: Iterable[tuple[int, dict]], kind: str,
                    confirmed_by: str = "cli") -> tuple[list[BaseModel], list[RowError]]:
    """Validate file rows as listing events (kind="listings") or toxic items (kind="toxic")."""
    records: list[BaseModel] = []
    errors: list[RowError] = []
    for number, row in rows:
        try:
            data = _coerce(dict(row))
            if kind == "listings":
                model = ListingDelete if data.get("op") == "delete" else ListingUpsert
                data.pop("cluster", None)
                records.append(model.model_validate(data, strict=False))
            else:
                data.setdefault("confirmed_by", confirmed_by)
                for extra in ("price", "seller", "created_at", "op"):
                    data.pop(extra, None)
                records.append(ToxicItem.model_validate(data, strict=False))
        except (ValidationError, ValueError, TypeError) as exc:
            errors.append(RowError(number, str(exc).splitlines()[0][:300]))
    return records, errors


async def publish(kafka: KafkaSettings, topics: Topics, spec: TopicSpec,
                  records: Iterable[BaseModel]) -> int:
    """Send records to a topic of the registry, keyed as it says, and wait until the broker
    has all of them."""
    topic = topics.name(spec)
    producer = clients.producer(kafka)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=spec.key(r).encode(), value=encode(r))
                   for r in records]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str,
                           wait_s: float = 10.0) -> list[TopicPartition]:
    """The partitions of a topic, waiting up to ``wait_s`` for it to appear in the metadata."""
    deadline = time.monotonic() + wait_s
    while True:
        # aiokafka has no public "describe this topic" on a consumer; this is what topics() uses
        cluster = await consumer._client.fetch_all_metadata()
        found = cluster.partitions_for_topic(topic)
        if found or time.monotonic() >= deadline:
            return [TopicPartition(topic, p) for p in sorted(found or ())]
        await asyncio.sleep(0.2)


async def read_to_end(kafka: KafkaSettings, topic: str, timeout_s: float = 30.0, *,
                      since_ms: int | None = None, only: set[int] | None = None
                      ) -> list[ConsumerRecord]:
    """Every message of a topic from the beginning (or from the first written at or after
    ``since_ms``, epoch milliseconds) to its end as of this call; ``only`` these partitions
    when given."""
    consumer = clients.reader(kafka)
    await consumer.start()
    try:
        partitions = [tp for tp in await topic_partitions(consumer, topic, wait_s=0)
                      if only is None or tp.partition in only]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        if since_ms is not None:
            starts = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
            for tp in partitions:
                found = starts.get(tp)
                consumer.seek(tp, found.offset if found is not None else ends[tp])
        out: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} to its end took over {timeout_s}s")
            batches = await consumer.getmany(timeout_ms=200)
            for messages in batches.values():
                out += messages
        return out
    finally:
        await consumer.stop()


async def follow(kafka: KafkaSettings, topic: str, from_beginning: bool = False
                 ) -> AsyncIterator[ConsumerRecord]:
    """Yield messages of a topic as they arrive (no consumer group, nothing committed)."""
    consumer = clients.reader(kafka, [topic], latest=not from_beginning)
    await consumer.start()
    try:
        async for message in consumer:
            yield message
    finally:
        await consumer.stop()
