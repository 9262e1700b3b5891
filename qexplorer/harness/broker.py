"""A local single-node Apache Kafka 4.x broker (KRaft, combined roles) on 127.0.0.1.

For development, the tests and the demo: no Docker, no Kafka distribution. The broker's jars
come from Maven Central through ``pom.xml`` beside this file (fetched once with ``mvn`` into
``<cache_dir>/kafka/jars-<version>/``) and the broker runs as a detached ``java`` process.

Everything lives under the broker's home, ``<cache_dir>/kafka/`` (:class:`LocalBroker`)::

    jars-<version>/        the broker's classpath (``.complete`` marks a finished download)
    server.properties      rendered from the settings on every start
    data/cluster.id        the cluster id, chosen once when the storage is first formatted
    data/logs/             log.dirs: topic partitions and the KRaft metadata log
    broker.log             the broker's output (the previous run's is kept as broker.log.1)
    broker.pid             the pid of the running broker

Only the local broker is managed here: ``start``/``status``/``stop`` use
``KafkaSettings.local_address`` whatever ``KAFKA_BOOTSTRAP`` says.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qexplorer.config import KafkaSettings, Settings
from qexplorer.config.settings import LOCAL_HOST
from qexplorer.kafka.admin import is_reachable, port_open

__all__ = [
    "BrokerError",
    "BrokerStatus",
    "LocalBroker",
    "cluster_id_file",
    "data_dir",
    "ensure_jars",
    "ensure_started",
    "fetch_maven_jars",
    "jars_dir",
    "kafka_dir",
    "local_bootstrap",
    "log_file",
    "pid_file",
    "properties_file",
    "render_server_properties",
    "reset",
    "start",
    "status",
    "stop",
]

POM = Path(__file__).with_name("kafka-pom.xml")
READY_LINE = "Kafka Server started"
JARS_MARKER = ".complete"
MIN_JAVA = 17

# Brokers this process started: kept so they can be reaped (no zombies) and not garbage
# collected with a "subprocess still running" warning.
_CHILDREN: dict[int, subprocess.Popen] = {}


class BrokerError(RuntimeError):
    """The local broker could not be set up, started or stopped."""


@dataclass(frozen=True)
class BrokerStatus:
    """What is known about the local broker.

    ``running`` means the process in the pid file is alive and is a Kafka broker;
    ``reachable`` means a client fetched cluster metadata from ``bootstrap``.
    """

    running: bool
    pid: int | None
    bootstrap: str
    reachable: bool
    log_path: Path
    data_dir: Path

    def summary(self) -> str:
        """One line for humans."""
        state = "running" if self.running else "not running"
        pid = f" (pid {self.pid})" if self.pid else ""
        reach = "reachable" if self.reachable else "unreachable"
        return f"local Kafka {state}{pid}, {self.bootstrap} {reach}; log {self.log_path}"


@dataclass(frozen=True)
class LocalBroker:
    """The local broker: its settings (version, ports, heap) and its home folder."""

    kafka: KafkaSettings
    home: Path

    def __post_init__(self) -> None:
        # the broker runs in its home: every path it is given must be absolute
        object.__setattr__(self, "home", Path(self.home).expanduser().absolute())

    @classmethod
    def of(cls, settings: Settings) -> LocalBroker:
        """The local broker of these settings (home: ``<cache_dir>/kafka``)."""
        return cls(settings.kafka, settings.paths.kafka_dir)


# --- paths --------------------------------------------------------------------------------


def kafka_dir(broker: LocalBroker) -> Path:
    """The broker's home: everything of the local broker."""
    return broker.home


def jars_dir(broker: LocalBroker) -> Path:
    """The folder of the broker's jars for the configured Kafka version."""
    return kafka_dir(broker) / f"jars-{broker.kafka.local_version}"


def data_dir(broker: LocalBroker) -> Path:
    """The broker's data (``reset`` deletes it): cluster id and log.dirs."""
    return kafka_dir(broker) / "data"


def cluster_id_file(broker: LocalBroker) -> Path:
    """Where the cluster id chosen at the first format is kept."""
    return data_dir(broker) / "cluster.id"


def log_file(broker: LocalBroker) -> Path:
    """The broker's stdout and stderr."""
    return kafka_dir(broker) / "broker.log"


def pid_file(broker: LocalBroker) -> Path:
    """The pid of the running broker."""
    return kafka_dir(broker) / "broker.pid"


def properties_file(broker: LocalBroker) -> Path:
    """The rendered ``server.properties``."""
    return kafka_dir(broker) / "server.properties"


def local_bootstrap(broker: LocalBroker) -> str:
    """The local broker's client address (``KafkaSettings.local_address``)."""
    return broker.kafka.local_address


# --- configuration ------------------------------------------------------------------------


def render_server_properties(broker: LocalBroker) -> str:
    """The broker's ``server.properties``: one node that is both broker and KRaft controller.

    Pure: computes text only, touches no file.
    """
    port = broker.kafka.local_port
    controller_port = broker.kafka.local_controller_port
    if port == controller_port:
        raise BrokerError(
            f"QEXPLORER_LOCAL_KAFKA_PORT and QEXPLORER_LOCAL_KAFKA_CONTROLLER_PORT are both "
            f"{port}: they must differ"
        )
    logs = data_dir(broker) / "logs"
    entries: list[tuple[str, object] | str] = [
        "# Rendered by qexplorer.harness.broker from the settings; rewritten on every start.",
        "# KRaft, one node with both roles",
        ("process.roles", "broker,controller"),
        ("node.id", 1),
        ("controller.quorum.voters", f"1@{LOCAL_HOST}:{controller_port}"),
        ("controller.listener.names", "CONTROLLER"),
        ("listeners",
         f"PLAINTEXT://{LOCAL_HOST}:{port},CONTROLLER://{LOCAL_HOST}:{controller_port}"),
        ("advertised.listeners", f"PLAINTEXT://{LOCAL_HOST}:{port}"),
        ("inter.broker.listener.name", "PLAINTEXT"),
        ("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"),
        "# storage",
        ("log.dirs", _escape_property(str(logs))),
        ("num.partitions", 1),
        ("auto.create.topics.enable", "false"),
        ("delete.topic.enable", "true"),
        "# internal topics on a single node",
        ("offsets.topic.replication.factor", 1),
        ("offsets.topic.num.partitions", 1),
        ("transaction.state.log.replication.factor", 1),
        ("transaction.state.log.min.isr", 1),
        ("share.coordinator.state.topic.replication.factor", 1),
        ("share.coordinator.state.topic.min.isr", 1),
        ("default.replication.factor", 1),
        ("min.insync.replicas", 1),
        "# fast group joins in tests",
        ("group.initial.rebalance.delay.ms", 0),
        "# small machine",
        ("num.network.threads", 2),
        ("num.io.threads", 2),
        ("log.cleaner.dedupe.buffer.size", 16 * 1024 * 1024),
        "# compacted topics (listings) are cleaned soon after a segment rolls",
        ("log.cleaner.backoff.ms", 1000),
    ]
    lines = [e if isinstance(e, str) else f"{e[0]}={e[1]}" for e in entries]
    return "\n".join(lines) + "\n"


def _escape_property(value: str) -> str:
    """Escape a value for a Java .properties file (backslashes and leading spaces)."""
    value = value.replace("\\", "\\\\")
    if value.startswith(" "):
        value = "\\" + value
    return value


# --- jars ---------------------------------------------------------------------------------


def ensure_jars(broker: LocalBroker, progress: Callable[[str], Any] | None = print) -> Path:
    """The folder of the broker's jars, fetched from Maven Central with ``mvn`` the first time
    (see :func:`fetch_maven_jars`)."""
    version = broker.kafka.local_version
    return fetch_maven_jars(POM, jars_dir(broker), {"kafka.version": version},
                            expect="kafka_2.13-", label=f"Kafka {version} broker",
                            progress=progress)


def fetch_maven_jars(pom: Path, target: Path, defines: dict[str, str], *, expect: str,
                     label: str, progress: Callable[[str], Any] | None = print) -> Path:
    """``target``, holding the runtime jars of ``pom`` (with ``-Dkey=value`` ``defines``),
    fetched from Maven Central with ``mvn`` the first time; a jar named ``expect``* must be
    among them.

    The download is marked complete only after ``mvn`` succeeded, so an interrupted one is
    redone (and so is one made with a different pom). Safe to call from several processes at
    once (a file lock serialises them).
    """
    marker = target / JARS_MARKER
    if _jars_complete(marker, pom):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if _jars_complete(marker, pom):  # another process finished while we waited
            return target
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                f"Maven ('mvn') is not on PATH: it is needed once to fetch the {label} jars "
                "(e.g. apt-get install maven)"
            )
        if not pom.is_file():
            raise BrokerError(f"{pom} is missing: the package was installed without it")
        if target.exists():
            shutil.rmtree(target)  # a half download
        target.mkdir(parents=True)
        _say(progress, f"Fetching the {label} jars from Maven Central into {target} "
                       "(once, about 45 MB)...")
        t0 = time.monotonic()
        cmd = [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={target}", "-DincludeScope=runtime",
               *(f"-D{key}={value}" for key, value in defines.items())]
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              cwd=target.parent, check=False)
        jars = sorted(target.glob("*.jar"))
        if proc.returncode != 0 or not any(j.name.startswith(expect) for j in jars):
            output = (proc.stdout + proc.stderr).strip()
            raise BrokerError(
                f"fetching the {label} jars failed (mvn exit {proc.returncode}):\n"
                f"{_tail(output, 40)}"
            )
        marker.write_text(f"{_pom_digest(pom)}\n{label}: {len(jars)} jars\n")
        _say(progress, f"Fetched {len(jars)} jars in {time.monotonic() - t0:.0f} s.")
    return target


def _pom_digest(pom: Path) -> str:
    return "pom-sha256=" + hashlib.sha256(pom.read_bytes()).hexdigest()


def _jars_complete(marker: Path, pom: Path) -> bool:
    """The download finished, and with the pom in use (a changed pom refetches)."""
    try:
        first = marker.read_text().splitlines()[0]
    except (OSError, IndexError):
        return False
    return not pom.is_file() or first == _pom_digest(pom)


# --- process ------------------------------------------------------------------------------


def status(broker: LocalBroker) -> BrokerStatus:
    """The local broker's state: is our process alive, and does it answer clients."""
    pid = _read_pid(broker)
    running = pid is not None and _is_broker_process(pid)
    bootstrap = local_bootstrap(broker)
    return BrokerStatus(
        running=running,
        pid=pid if running else None,
        bootstrap=bootstrap,
        reachable=is_reachable(bootstrap),
        log_path=log_file(broker),
        data_dir=data_dir(broker),
    )


def start(
    broker: LocalBroker, wait_s: float = 90, progress: Callable[[str], Any] | None = print
) -> BrokerStatus:
    """Start the local broker unless it already runs, and wait until clients can use it.

    Idempotent: a running, reachable broker is left alone; a broker still starting up is
    waited for. The first start fetches the jars (see ``ensure_jars``) and formats the
    storage. Raises ``BrokerError`` with the end of the broker's log when it dies or is not
    ready within ``wait_s`` seconds (it is then stopped).
    """
    kdir = kafka_dir(broker)
    kdir.mkdir(parents=True, exist_ok=True)
    bootstrap = local_bootstrap(broker)
    with _file_lock(kdir / ".broker.lock"):
        pid = _read_pid(broker)
        if pid is not None and _is_broker_process(pid):
            if is_reachable(bootstrap):
                return status(broker)
            _say(progress, f"Local Kafka (pid {pid}) is up but not ready yet: waiting...")
            _wait_ready(broker, pid, wait_s)
            return status(broker)
        if pid is not None:
            pid_file(broker).unlink(missing_ok=True)  # stale: that process is gone
        if is_reachable(bootstrap):
            # Not ours (no pid file) but a Kafka answers there: use it rather than fight it.
            _say(progress, f"A Kafka broker not started by QExplorer answers on {bootstrap}: "
                           "using it.")
            return status(broker)
        for port in (broker.kafka.local_port, broker.kafka.local_controller_port):
            if port_open(LOCAL_HOST, port, 1.0):
                raise BrokerError(
                    f"port {port} on {LOCAL_HOST} is taken by something that is not a Kafka "
                    "broker: free it or set QEXPLORER_LOCAL_KAFKA_PORT / "
                    "QEXPLORER_LOCAL_KAFKA_CONTROLLER_PORT"
                )

        java = _check_java()
        jars = ensure_jars(broker, progress)
        props = properties_file(broker)
        props.write_text(render_server_properties(broker))
        _format_storage(broker, java, jars, props)

        log = log_file(broker)
        if log.exists():
            log.replace(log.with_name(log.name + ".1"))
        cmd = [
            java,
            f"-Xmx{broker.kafka.local_heap}",
            f"-Xms{broker.kafka.local_heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS",
            "-cp", f"{jars}/*",
            "kafka.Kafka",
            str(props),
        ]
        _say(progress, f"Starting local Kafka {broker.kafka.local_version} on {bootstrap} "
                       f"(log: {log})...")
        t0 = time.monotonic()
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=kdir, start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        pid_file(broker).write_text(f"{proc.pid}\n")
        try:
            _wait_ready(broker, proc.pid, wait_s)
        except BrokerError:
            _terminate(proc.pid, 10)
            pid_file(broker).unlink(missing_ok=True)
            raise
        _say(progress, f"Local Kafka ready in {time.monotonic() - t0:.1f} s (pid {proc.pid}).")
        return status(broker)


def ensure_started(settings: Settings, progress: Callable[[str], Any] | None = print) -> bool:
    """Start the local broker when the settings name no cluster and none answers; True when
    it was started here (the caller may stop it again)."""
    if not settings.kafka.uses_local_broker:
        return False
    broker = LocalBroker.of(settings)
    if status(broker).reachable:
        return False
    start(broker, progress=progress)
    return True


def stop(broker: LocalBroker, timeout_s: float = 30) -> bool:
    """Stop the local broker started by ``start``: SIGTERM, then SIGKILL after ``timeout_s``.

    Returns True when a broker was running and is now stopped, False when none was running.
    A broker QExplorer did not start (no pid file) is never touched.
    """
    kdir = kafka_dir(broker)
    if not kdir.exists():
        return False
    with _file_lock(kdir / ".broker.lock"):
        pid = _read_pid(broker)
        was_running = pid is not None and _is_broker_process(pid)
        if was_running:
            _terminate(pid, timeout_s)
        pid_file(broker).unlink(missing_ok=True)
        return was_running


def reset(broker: LocalBroker) -> None:
    """Stop the local broker and delete its data (topics, offsets, cluster id)."""
    stop(broker)
    shutil.rmtree(data_dir(broker), ignore_errors=True)


# --- helpers ------------------------------------------------------------------------------


def _say(progress: Callable[[str], Any] | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _log_tail(broker: LocalBroker, lines: int = 30) -> str:
    try:
        text = log_file(broker).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return _tail(text, lines) or "(empty log)"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def parse_java_major(version_output: str) -> int | None:
    """The major Java version from ``java -version`` output (``1.8`` counts as 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def _check_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            f"'java' is not on PATH: the local Kafka broker needs Java {MIN_JAVA} or newer "
            "(e.g. apt-get install openjdk-17-jre-headless)"
        )
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = parse_java_major(proc.stderr + proc.stdout)
    if major is not None and major < MIN_JAVA:
        raise BrokerError(f"{java} is Java {major}; Kafka 4 needs Java {MIN_JAVA} or newer")
    return java


def _format_storage(broker: LocalBroker, java: str, jars: Path, props: Path) -> None:
    """Format log.dirs for KRaft once; the cluster id is kept in ``data/cluster.id``."""
    logs = data_dir(broker) / "logs"
    if (logs / "meta.properties").is_file():
        return
    base = [java, "-Xmx256m", "-cp", f"{jars}/*", "kafka.tools.StorageTool"]
    id_file = cluster_id_file(broker)
    cluster_id = id_file.read_text().strip() if id_file.is_file() else ""
    if not cluster_id:
        proc = subprocess.run([*base, "random-uuid"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)
        cluster_id = proc.stdout.strip().splitlines()[-1].strip() if proc.stdout.strip() else ""
        if proc.returncode != 0 or not re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id):
            output = _tail(proc.stdout + proc.stderr)
            raise BrokerError(f"StorageTool random-uuid failed:\n{output}")
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(cluster_id + "\n")
    proc = subprocess.run(
        [*base, "format", "-t", cluster_id, "-c", str(props), "--ignore-formatted"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )
    if proc.returncode != 0:
        raise BrokerError(f"StorageTool format failed:\n{_tail(proc.stdout + proc.stderr)}")


def _read_pid(broker: LocalBroker) -> int | None:
    try:
        return int(pid_file(broker).read_text().strip())
    except (OSError, ValueError):
        return None


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _is_alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        state = stat.read_text().rpartition(")")[2].split()[0]
        return state not in ("Z", "X")
    return True


def _is_broker_process(pid: int) -> bool:
    """Alive and (where /proc tells) running ``kafka.Kafka``: a recycled pid is not ours."""
    if not _is_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return b"kafka.Kafka" in cmdline.read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid file


def _wait_ready(broker: LocalBroker, pid: int, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    bootstrap = local_bootstrap(broker)
    log = log_file(broker)
    while True:
        if not _is_alive(pid):
            raise BrokerError(
                f"the local Kafka broker (pid {pid}) exited during start-up; end of {log}:\n"
                f"{_log_tail(broker)}"
            )
        started = False
        with contextlib.suppress(OSError):
            started = READY_LINE in log.read_text(errors="replace")
        if started and is_reachable(bootstrap, timeout_s=3):
            return
        if time.monotonic() > deadline:
            raise BrokerError(
                f"the local Kafka broker (pid {pid}) was not ready within {wait_s:.0f} s; "
                f"end of {log}:\n{_log_tail(broker)}"
            )
        time.sleep(0.25)


def _terminate(pid: int, timeout_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _is_alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 10
            while _is_alive(pid) and time.monotonic() < kill_deadline:
                time.sleep(0.1)
            break
        time.sleep(0.2)
    _CHILDREN.pop(pid, None)
