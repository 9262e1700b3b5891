"""The local broker's configuration and helpers, without a broker."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from qexplorer.config import KafkaSettings, Settings
from qexplorer.harness import broker as local
from qexplorer.harness.broker import BrokerError, LocalBroker, render_server_properties
from qexplorer.kafka.admin import is_reachable, parse_bootstrap

# every test sees only the settings it sets (tests/unit/conftest.py)
pytestmark = pytest.mark.usefixtures("clean_env")


def _props(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {line!r}"
        assert key not in out, f"duplicate key {key}"
        out[key] = value
    return out




def _broker(cache_dir: Path, **kafka: object) -> LocalBroker:
    """The local broker of settings with this cache directory and these Kafka values."""
    return LocalBroker.of(Settings.load(paths={"cache_dir": cache_dir}, kafka=kafka))


@pytest.fixture
def broker(tmp_path: Path) -> LocalBroker:
    return _broker(tmp_path / "cache", bootstrap=None, local_port=9092,
                   local_controller_port=9093)


def test_the_broker_of_the_settings(tmp_path: Path) -> None:
    settings = Settings.load(paths={"cache_dir": tmp_path / "cache"},
                             kafka={"local_port": 19092})
    broker = LocalBroker.of(settings)
    assert broker.kafka is settings.kafka
    assert broker.home == local.kafka_dir(broker) == tmp_path / "cache" / "kafka"
    assert local.local_bootstrap(broker) == settings.kafka.local_address == "127.0.0.1:19092"
    # the local broker is managed whatever KAFKA_BOOTSTRAP says
    external = LocalBroker.of(settings.replace(kafka={"bootstrap": "cluster:9092"}))
    assert local.local_bootstrap(external) == "127.0.0.1:19092"
    assert render_server_properties(external) == render_server_properties(broker)


def test_single_node_kraft_with_combined_roles(broker: LocalBroker) -> None:
    props = _props(render_server_properties(broker))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert "controller.quorum.bootstrap.servers" not in props  # static voters: plain format


def test_listeners_on_loopback_with_configured_ports(tmp_path: Path) -> None:
    broker = LocalBroker(KafkaSettings(local_port=19092, local_controller_port=19093), tmp_path)
    props = _props(render_server_properties(broker))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert local.local_bootstrap(broker) == "127.0.0.1:19092"


def test_replication_and_tuning_for_one_small_node(broker: LocalBroker) -> None:
    props = _props(render_server_properties(broker))
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    assert props["offsets.topic.num.partitions"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["num.network.threads"] == "2"
    assert props["num.io.threads"] == "2"
    assert int(props["log.cleaner.dedupe.buffer.size"]) == 16 * 1024 * 1024
    assert props["auto.create.topics.enable"] == "false"


def test_log_dirs_inside_the_cache_data_dir(broker: LocalBroker, tmp_path: Path) -> None:
    props = _props(render_server_properties(broker))
    log_dirs = Path(props["log.dirs"])
    assert log_dirs.is_relative_to(tmp_path / "cache" / "kafka" / "data")
    assert local.data_dir(broker) == tmp_path / "cache" / "kafka" / "data"


def test_render_is_pure(broker: LocalBroker, tmp_path: Path) -> None:
    first = render_server_properties(broker)
    assert first == render_server_properties(broker)
    assert not (tmp_path / "cache").exists()


def test_relative_cache_dir_is_made_absolute(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    props = _props(render_server_properties(_broker(Path("rel"))))
    assert Path(props["log.dirs"]) == tmp_path / "rel" / "kafka" / "data" / "logs"


def test_same_ports_are_refused(tmp_path: Path) -> None:
    broker = LocalBroker(KafkaSettings(local_port=9092, local_controller_port=9092), tmp_path)
    with pytest.raises(BrokerError, match="must differ"):
        render_server_properties(broker)


def test_paths_are_under_cache_dir_and_versioned(tmp_path: Path) -> None:
    broker = _broker(tmp_path, local_version="4.9.9")
    assert local.jars_dir(broker) == tmp_path / "kafka" / "jars-4.9.9"
    assert local.log_file(broker).parent == tmp_path / "kafka"
    assert local.pid_file(broker).parent == tmp_path / "kafka"
    assert local.properties_file(broker).parent == tmp_path / "kafka"
    assert local.cluster_id_file(broker).parent == tmp_path / "kafka" / "data"


def test_properties_escaping() -> None:
    assert local._escape_property("C:\\kafka\\data") == "C:\\\\kafka\\\\data"
    assert local._escape_property(" x") == "\\ x"


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("nonsense", None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert local.parse_java_major(output) == major


def test_parse_bootstrap() -> None:
    assert parse_bootstrap("127.0.0.1:9092, host:1234") == [
        ("127.0.0.1", 9092),
        ("host", 1234),
    ]


def test_jars_marker_needs_the_current_pom(tmp_path: Path) -> None:
    marker = tmp_path / local.JARS_MARKER
    assert not local._jars_complete(marker, local.POM)
    marker.write_text("pom-sha256=stale\nkafka 4.0.0: 40 jars\n")
    assert not local._jars_complete(marker, local.POM)
    marker.write_text(local._pom_digest(local.POM) + "\n")
    assert local._jars_complete(marker, local.POM)


def test_pom_takes_the_kafka_version_from_a_property() -> None:
    pom = local.POM.read_text()
    assert "<packaging>pom</packaging>" in pom
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert "<version>${kafka.version}</version>" in pom
    assert "<artifactId>slf4j-simple</artifactId>" in pom


def test_nothing_listening_is_not_reachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port is free again: nothing listens there.
    assert is_reachable(f"127.0.0.1:{port}", timeout_s=1) is False


def test_status_without_a_broker(broker: LocalBroker) -> None:
    probe = LocalBroker(broker.kafka.changed(local_port=_free_port()), broker.home)
    state = local.status(probe)
    assert state.running is False
    assert state.pid is None
    assert state.reachable is False
    assert state.log_path == local.log_file(probe)


def test_stop_without_a_broker_is_a_no_op(broker: LocalBroker) -> None:
    assert local.stop(broker) is False
    assert not broker.home.exists()  # nothing created either


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
