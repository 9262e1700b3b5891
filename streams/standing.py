"""The operator's view of the standing queries: read them back from the topics, retire one.

:func:`read_book` fills an ``agents.standing.StandingBook`` from ``standing-queries`` and
``moderation-decisions`` as every worker does, so ``qexplorer standing list`` shows what the
workers match against. :func:`retire` publishes a query's ``retired`` record: each worker's
replica reads it and stops matching the query at its next batch.
"""

from __future__ import annotations

from agents.standing import StandingBook
from qexplorer.config import Settings
from qexplorer.kafka.io import publish, read_to_end
from schemas.codec import SchemaError, decode
from schemas.models import ModerationDecision, StandingQuery, utcnow
from schemas.topics import STANDING_QUERIES


async def read_book(settings: Settings) -> tuple[StandingBook, int]:
    """The standing queries and the decisions on what they found, from the topics; and how
    many records broke their contract (skipped, as the workers skip them)."""
    book = StandingBook(settings.standing)
    bad = 0
    for message in await read_to_end(settings.kafka, settings.topics.standing):
        try:
            book.put(decode(StandingQuery, message.value))
        except SchemaError:
            bad += 1
    for message in await read_to_end(settings.kafka, settings.topics.decisions):
        try:
            book.decide(decode(ModerationDecision, message.value))
        except SchemaError:
            bad += 1
    return book, bad


async def retire(settings: Settings, query_ids: list[str], *, reason: str,
                 by: str) -> list[StandingQuery]:
    """Publish a ``retired`` record for each of ``query_ids`` (KeyError naming the ids that
    are not standing queries); returns the records published."""
    book, _ = await read_book(settings)
    missing = [q for q in query_ids if q not in book.queries]
    if missing:
        raise KeyError(f"not a standing query: {', '.join(missing)}")
    now = utcnow()
    records = [book.queries[q].model_copy(update={
        "status": "retired", "reason": reason[:1_000], "updated_by": by[:200],
        "updated_at": now}) for q in query_ids]
    await publish(settings.kafka, settings.topics, STANDING_QUERIES, records)
    return records
