"""The local development Kafka broker: a single KRaft node on 127.0.0.1 run from Maven jars.

See ``streams.broker.local`` for how it works; the names below are its public API.
"""

from streams.broker.local import (
    BrokerError,
    BrokerStatus,
    data_dir,
    ensure_jars,
    is_reachable,
    is_reachable_async,
    jars_dir,
    kafka_dir,
    local_bootstrap,
    log_file,
    pid_file,
    render_server_properties,
    reset,
    start,
    status,
    stop,
)

__all__ = [
    "BrokerError",
    "BrokerStatus",
    "data_dir",
    "ensure_jars",
    "is_reachable",
    "is_reachable_async",
    "jars_dir",
    "kafka_dir",
    "local_bootstrap",
    "log_file",
    "pid_file",
    "render_server_properties",
    "reset",
    "start",
    "status",
    "stop",
]
