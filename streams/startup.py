"""The worker's start-up check, run before faust starts: a worker that cannot work says why in
one line and exits, instead of faust's consumers logging a hundred "not found in cluster
metadata" errors first.

It refuses when no broker answers, when a topic the worker reads or writes does not exist
(create them first: ``qexplorer topics create``) and when ``listings`` would lose data (the
topic every replica is rebuilt from); other differences from the registry are warnings.
``model-rollouts`` may be missing: rollouts are then off for the worker, as the follower says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qexplorer.config import Settings
from qexplorer.kafka.admin import is_reachable_async, judge_topics, live_configs
from schemas.topics import (
    DEAD_LETTER,
    DETECTIONS,
    LISTINGS,
    MODERATION_DECISIONS,
    SEARCH_FEEDBACK,
    STANDING_QUERIES,
    TOXIC_ITEMS,
    TopicSpec,
)

#: How long the broker has to answer.
REACH_TIMEOUT_S = 10.0


class StartupRefused(RuntimeError):
    """The worker must not start; the message says why in one line."""


def needed(settings: Settings) -> list[TopicSpec]:
    """The topics a worker with these settings reads or writes."""
    specs = [LISTINGS, TOXIC_ITEMS, SEARCH_FEEDBACK, DETECTIONS, DEAD_LETTER]
    if settings.standing.enabled:
        specs += [STANDING_QUERIES, MODERATION_DECISIONS]
    return specs


@dataclass
class Readiness:
    """What the start-up check found."""

    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


async def readiness(settings: Settings) -> Readiness:
    """Check the broker and the live topics against what the worker needs."""
    kafka, topics = settings.kafka, settings.topics
    found = Readiness()
    if not await is_reachable_async(kafka.servers, REACH_TIMEOUT_S,
                                    **{k: v for k, v in kafka.client_kwargs().items()
                                       if k != "bootstrap_servers"}):
        hint = "start one (qexplorer kafka start)" if kafka.uses_local_broker \
            else "check KAFKA_BOOTSTRAP and the security settings"
        found.refusals.append(f"no Kafka broker answers at {kafka.servers}: {hint}")
        return found
    live = await live_configs(kafka, topics.all())
    missing = [topics.name(spec) for spec in needed(settings) if topics.name(spec) not in live]
    if missing:
        found.refusals.append(f"missing topics {', '.join(missing)}: create them first "
                              "(qexplorer topics create)")
        return found
    check = judge_topics(topics, live)
    found.refusals += [f"{reason}: set it with kafka-configs.sh --alter --entity-type topics "
                       f"--entity-name {topics.listings} --add-config cleanup.policy=compact"
                       for reason in check.refusals]
    found.warnings += check.warnings
    return found
