"""The real local Kafka broker: started if needed, used, and left running for other tests."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from qexplorer.config import Settings
from qexplorer.harness import broker as local
from qexplorer.kafka.admin import is_reachable, is_reachable_async

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings() -> local.LocalBroker:
    settings = Settings()
    if not settings.kafka.uses_local_broker:
        pytest.skip("KAFKA_BOOTSTRAP points at another cluster: the local broker is not used")
    return local.LocalBroker.of(settings)


@pytest.fixture(scope="module")
def broker(settings: local.LocalBroker) -> local.BrokerStatus:
    # Idempotent: reuses a broker that is already running. Never stopped here: other tests
    # share it.
    return local.start(settings, wait_s=120)


def test_start_is_idempotent_and_reachable(settings: local.LocalBroker,
                                           broker: local.BrokerStatus) -> None:
    assert broker.reachable
    assert broker.bootstrap == local.local_bootstrap(settings) == settings.kafka.servers
    again = local.start(settings)
    assert again.reachable
    assert again.pid == broker.pid
    assert is_reachable(settings.kafka.servers)


def test_status_reports_the_running_broker(settings: local.LocalBroker,
                                           broker: local.BrokerStatus) -> None:
    state = local.status(settings)
    assert state.reachable
    if broker.pid is not None:  # started by QExplorer (not some other broker on the port)
        assert state.running
        assert state.pid == broker.pid
        assert "Kafka Server started" in state.log_path.read_text(errors="replace")
    assert state.data_dir == local.data_dir(settings)


async def test_reachable_from_inside_an_event_loop(broker: local.BrokerStatus) -> None:
    assert is_reachable(broker.bootstrap)
    assert await is_reachable_async(broker.bootstrap)


async def test_create_and_delete_a_topic(broker: local.BrokerStatus) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    name = f"qexplorer-broker-test-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, 3, 1)])
        assert [err for _, err, *_ in response.topic_errors] == [0]
        # the broker applies the new topic's metadata asynchronously too
        deadline = time.monotonic() + 30
        while (described := await admin.describe_topics([name]))[0]["error_code"] != 0:
            assert time.monotonic() < deadline, f"{name} not described 30 s after creation"
            await asyncio.sleep(0.2)
        assert len(described[0]["partitions"]) == 3
        response = await admin.delete_topics([name])
        assert [err for _, err, *_ in response.topic_error_codes] == [0]
        # the broker deletes asynchronously: the topic goes from the listing within a deadline
        deadline = time.monotonic() + 30
        while name in await admin.list_topics():
            assert time.monotonic() < deadline, f"{name} still listed 30 s after its deletion"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
