"""The one place aiokafka clients are built: connection and security from ``KafkaSettings``,
and the tuning every QExplorer client shares.

Three kinds, named by what they are for:

* :func:`reader` reads topics itself: no consumer group, nothing committed, from the
  beginning unless told otherwise (the replica's ledger, the rollout follower, the tools);
* :func:`member` is one member of a consumer group sharing a topic's partitions (the watcher,
  a shared index's feeder): offsets committed by the caller, never automatically, and a
  session that ends after ``session_timeout_s`` so a killed worker's partitions move on soon;
* :func:`producer` waits for every in-sync replica (``acks=all``): a record counts as sent
  only once the broker has it.

Fetches are large (32 MB) and short-waited when asked (``wait_ms``): a seed waiting for what
was published before it should not also wait for a fetch to fill up.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from qexplorer.config import KafkaSettings

#: The most a fetch brings back (all partitions together).
FETCH_MAX_BYTES = 32 * 1024 * 1024
#: How long a fetch waits for data by default (aiokafka's own default).
FETCH_WAIT_MS = 500


def reader(kafka: KafkaSettings, topics: Sequence[str] = (), *, latest: bool = False,
           max_records: int | None = None, wait_ms: int = FETCH_WAIT_MS) -> AIOKafkaConsumer:
    """A consumer without a group: subscribed to ``topics`` when given, else for the caller
    to ``assign``; it starts at the beginning (``latest``: at the end) where it has no
    position."""
    return AIOKafkaConsumer(*topics, **kafka.client_kwargs(), group_id=None,
                            enable_auto_commit=False,
                            auto_offset_reset="latest" if latest else "earliest",
                            fetch_max_bytes=FETCH_MAX_BYTES, fetch_max_wait_ms=wait_ms,
                            **({"max_poll_records": max_records} if max_records else {}))


def member(kafka: KafkaSettings, group: str, topics: Sequence[str] = (), *,
           session_timeout_s: float = 10.0, max_records: int | None = None,
           wait_ms: int = FETCH_WAIT_MS) -> AIOKafkaConsumer:
    """A member of consumer group ``group`` (subscribed to ``topics`` when given; the caller
    subscribes with a rebalance listener otherwise). Nothing is committed automatically:
    the caller commits once what it read is handled."""
    return AIOKafkaConsumer(*topics, **kafka.client_kwargs(), group_id=group,
                            enable_auto_commit=False, auto_offset_reset="earliest",
                            fetch_max_bytes=FETCH_MAX_BYTES, fetch_max_wait_ms=wait_ms,
                            session_timeout_ms=int(session_timeout_s * 1000),
                            heartbeat_interval_ms=int(session_timeout_s * 1000 / 3),
                            **({"max_poll_records": max_records} if max_records else {}))


def producer(kafka: KafkaSettings, *, idempotent: bool = False, linger_ms: int = 5,
             max_batch_size: int = 256 * 1024) -> AIOKafkaProducer:
    """A producer whose sends resolve once every in-sync replica has the record
    (``idempotent``: the broker also drops a retried duplicate)."""
    return AIOKafkaProducer(**kafka.client_kwargs(), acks="all", linger_ms=linger_ms,
                            max_batch_size=max_batch_size, enable_idempotence=idempotent)


def admin(kafka: KafkaSettings) -> AIOKafkaAdminClient:
    """An admin client (topics, configurations, consumer-group offsets)."""
    return AIOKafkaAdminClient(**kafka.client_kwargs())
