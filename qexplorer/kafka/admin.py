"""Topic administration: create QExplorer's topics as the registry declares them, delete them,
check that the live topics keep what they must, and whether a broker answers at all.

Auto-created topics get the broker's defaults (and faust then disagrees with them), so every
topic is created here, with its partitions and configuration (``schemas.topics``), before a
worker starts. A worker checks the live configuration at start (:func:`check_topics`) and
refuses to run when ``listings`` would lose data: that topic is the source every replica is
rebuilt from.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from qexplorer.config import KafkaSettings
from qexplorer.kafka import clients
from schemas.topics import LISTINGS, Topics, TopicSpec, faust_internal_topics

_T = TypeVar("_T")

#: Configuration keys the registry manages.
MANAGED = ("cleanup.policy", "retention.ms")


async def create_topics(kafka: KafkaSettings, topics: Topics,
                        extra_config: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """Create the topics that do not exist yet; return the names created. ``extra_config``
    adds settings by full topic name (tests force compaction with it)."""
    extra = extra_config or {}
    admin = clients.admin(kafka)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, topics.partitions(spec), topics.replication,
                            topic_configs={**topics.config(spec), **extra.get(name, {})})
                   for name, spec in topics if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                await admin.create_topics(missing)
        return [t.name for t in missing]
    finally:
        await admin.close()


async def delete_topics(kafka: KafkaSettings, topics: Topics, *, app_id: str | None = None,
                        names: Iterable[str] = ()) -> list[str]:
    """Delete the registry's topics (with this prefix), faust's own topics of ``app_id`` and
    ``names``; returns those that existed. The broker deletes asynchronously: a topic may
    still be listed for a moment after this returns."""
    wanted = [*topics.all(), *(faust_internal_topics(app_id) if app_id else []), *names]
    admin = clients.admin(kafka)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in dict.fromkeys(wanted) if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()


async def live_configs(kafka: KafkaSettings, names: Iterable[str],
                       wait_s: float = 10.0) -> dict[str, dict[str, str]]:
    """The broker's configuration of each existing topic among ``names``. A topic just
    created can be listed before its configuration is described (the broker applies the
    controller's metadata asynchronously): such a topic is asked again for up to ``wait_s``."""
    admin = clients.admin(kafka)
    await admin.start()
    out: dict[str, dict[str, str]] = {}
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in names if n in existing]
        deadline = time.monotonic() + wait_s
        while wanted:
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name) for name in wanted])
            for response in responses:
                for resource in response.to_object()["resources"]:
                    if resource["error_code"] == 0:
                        out[resource["resource_name"]] = {
                            e["config_names"]: e["config_value"]
                            for e in resource["config_entries"]}
            wanted = [n for n in wanted if n not in out]
            if wanted and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            else:
                break
    finally:
        await admin.close()
    return out


#: The broker's defaults where a configuration does not say (7 days; no size limit).
_BROKER_DEFAULTS = {"retention.ms": "604800000", "retention.bytes": "-1"}


def data_loss(config: Mapping[str, str]) -> list[str]:
    """Why a topic with this live configuration would delete records that may still be
    current (empty when it keeps every key's latest record): the ``listings`` requirement.
    A time or size limit deletes whole segments, the latest record of a listing included."""
    policy = config.get("cleanup.policy", "delete")
    if "delete" not in {p.strip() for p in policy.split(",")}:
        return []
    limits = {key: config.get(key, default) for key, default in _BROKER_DEFAULTS.items()}
    return [f"cleanup.policy={policy} with {key}={value} (listings would be deleted: it must "
            "be compact, or keep everything)" for key, value in limits.items() if value != "-1"]


def drift(spec: TopicSpec, expected: Mapping[str, str], live: Mapping[str, str]) -> list[str]:
    """The managed settings where a live topic differs from what the registry declares."""
    return [f"{spec.name}: {key}={live.get(key)!r}, expected {expected[key]!r}"
            for key in MANAGED if key in expected and live.get(key) != expected[key]]


@dataclass
class TopicCheck:
    """What a worker found in the live topic configuration."""

    refusals: list[str] = field(default_factory=list)  # the worker must not run
    warnings: list[str] = field(default_factory=list)  # differs from the registry

    @property
    def ok(self) -> bool:
        """True when nothing refuses the worker."""
        return not self.refusals


async def check_topics(kafka: KafkaSettings, topics: Topics) -> TopicCheck:
    """Compare the live topics with the registry (:func:`judge_topics`)."""
    return judge_topics(topics, await live_configs(kafka, topics.all()))


def judge_topics(topics: Topics, live: Mapping[str, Mapping[str, str]]) -> TopicCheck:
    """What the live configurations (topic -> configuration) mean for a worker: ``listings``
    that would lose data is a refusal, any other difference (retention, policy) a warning;
    a missing topic is neither (who needs it says so)."""
    check = TopicCheck()
    for name, spec in topics:
        config = live.get(name)
        if config is None:
            continue
        if spec is LISTINGS:
            check.refusals += [f"topic {name}: {reason}" for reason in data_loss(config)]
        check.warnings += drift(spec, topics.config(spec), config)
    return check


# --- reachability ---------------------------------------------------------------------------


async def is_reachable_async(bootstrap: str, timeout_s: float = 3.0, **client_kwargs: Any) -> bool:
    """True when a Kafka client fetches cluster metadata (with at least one broker) in time.

    ``client_kwargs`` go to ``AIOKafkaAdminClient`` (security broker, for instance).
    """
    if not any(port_open(host, port, timeout_s) for host, port in parse_bootstrap(bootstrap)):
        return False  # nothing listens: skip the client and its connection-error logging
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=max(int(timeout_s * 1000), 1000),
        **client_kwargs,
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def is_reachable(bootstrap: str, timeout_s: float = 3.0, **client_kwargs: Any) -> bool:
    """True when a Kafka client fetches cluster metadata from ``bootstrap`` in time.

    Synchronous; works inside a running event loop too (it then probes on a helper thread).
    """
    return _run_sync(is_reachable_async(bootstrap, timeout_s, **client_kwargs))


def _run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """(host, port) of each server of a bootstrap list (port 9092 when none is given)."""
    out = []
    for item in bootstrap.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host:
            host, port = item, "9092"
        out.append((host.strip("[]"), int(port)))
    return out


def port_open(host: str, port: int, timeout_s: float) -> bool:
    """True when something accepts a TCP connection there."""
    try:
        with socket.create_connection((host, port), timeout=min(timeout_s, 2.0)):
            return True
    except OSError:
        return False
