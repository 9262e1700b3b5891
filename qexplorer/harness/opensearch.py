"""A local OpenSearch cluster (two nodes by default) on 127.0.0.1, from Maven Central jars.

For development, the tests of the OpenSearch search backend and its benchmarks: no Docker, no
OpenSearch distribution. ``opensearch-pom.xml`` beside this file names the server, its
log4j backend and two modules (netty4 for HTTP, analysis-common); they are fetched once with
``mvn`` and sorted into a distribution folder (``lib/`` and ``modules/<name>/`` with the
descriptor and security policy each module needs). Each node is a detached ``java`` process.

Everything lives under ``<cache_dir>/opensearch/`` (:class:`LocalOpenSearch`)::

    jars-<version>/           what mvn fetched (``.complete`` marks a finished download)
    dist-<version>/lib/       the server's classpath
    dist-<version>/modules/   transport-netty4/, analysis-common/ (bin/, plugins/: empty)
    node-<n>/config/          opensearch.yml, log4j2.properties, jvm.options (rendered each start)
    node-<n>/data/            path.data
    node-<n>/node.log         the node's output; node.pid: its pid

OpenSearch refuses to run as root: started by root, the nodes run as a system user
(``QEXPLORER_OPENSEARCH_LOCAL_USER``, created when missing) that owns ``node-<n>/``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from qexplorer.config import OpenSearchSettings, Settings
from qexplorer.config.settings import LOCAL_HOST
from qexplorer.harness.broker import (
    BrokerError,
    _check_java,
    _file_lock,
    _is_alive,
    _say,
    _tail,
    _terminate,
    fetch_maven_jars,
    parse_java_major,
)

POM = Path(__file__).with_name("opensearch-pom.xml")
CLUSTER_NAME = "qexplorer-local"
MAIN_CLASS = "org.opensearch.bootstrap.OpenSearch"
MAX_JAVA = 23
#: module folder -> (the jars it holds by name prefix, the plugin class, a security policy)
MODULES: dict[str, tuple[tuple[str, ...], str, str | None]] = {
    "transport-netty4": (
        ("transport-netty4-client-", "netty-"),
        "org.opensearch.transport.Netty4Plugin",
        # without it every HTTP connection is refused with an AccessControlException
        'grant {\n  permission java.net.SocketPermission "*", "accept,connect";\n};\n'),
    "analysis-common": (
        ("analysis-common-",), "org.opensearch.analysis.common.CommonAnalysisPlugin", None),
}

_LOG4J = """status = error
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d{ISO8601}][%-5p][%c{1.}] %m%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
"""


@dataclass(frozen=True)
class NodeStatus:
    """One local node: its process and whether its HTTP port answers."""

    number: int
    pid: int | None
    url: str
    reachable: bool


@dataclass(frozen=True)
class ClusterStatus:
    """The local cluster: its nodes and the cluster's health as one of them reports it."""

    nodes: tuple[NodeStatus, ...]
    health: str | None  # green, yellow, red; None when no node answers
    joined: int  # nodes in the cluster, as the answering node sees it

    @property
    def running(self) -> bool:
        """Every node's process is alive."""
        return all(n.pid is not None for n in self.nodes)

    @property
    def ready(self) -> bool:
        """Every node answers and all of them have joined one cluster."""
        return all(n.reachable for n in self.nodes) and self.joined == len(self.nodes)

    def summary(self) -> str:
        """One line for humans."""
        nodes = ", ".join(f"node {n.number} {'pid ' + str(n.pid) if n.pid else 'stopped'}"
                          f" {n.url}{'' if n.reachable else ' unreachable'}"
                          for n in self.nodes)
        return f"local OpenSearch {self.health or 'down'} ({self.joined} joined): {nodes}"


@dataclass(frozen=True)
class LocalOpenSearch:
    """The local cluster: its settings (version, nodes, ports, heap) and its home folder."""

    settings: OpenSearchSettings
    home: Path

    @classmethod
    def of(cls, settings: Settings) -> LocalOpenSearch:
        """The local cluster of these settings (home: ``<cache_dir>/opensearch``)."""
        return cls(settings.opensearch, settings.paths.opensearch_dir)

    @property
    def numbers(self) -> range:
        """The node numbers, from 1."""
        return range(1, self.settings.local_nodes + 1)

    def node_dir(self, number: int) -> Path:
        """One node's folder: configuration, data, log, pid."""
        return self.home / f"node-{number}"

    def http_port(self, number: int) -> int:
        """Node ``number``'s HTTP port."""
        return self.settings.local_http_port + number - 1

    def transport_port(self, number: int) -> int:
        """Node ``number``'s transport (node-to-node) port."""
        return self.settings.local_transport_port + number - 1

    def url(self, number: int) -> str:
        """Node ``number``'s HTTP address."""
        return f"http://{LOCAL_HOST}:{self.http_port(number)}"

    def log_file(self, number: int) -> Path:
        """Node ``number``'s output."""
        return self.node_dir(number) / "node.log"

    def pid_file(self, number: int) -> Path:
        """Node ``number``'s pid."""
        return self.node_dir(number) / "node.pid"


# --- configuration ----------------------------------------------------------------------------


def render_node_config(cluster: LocalOpenSearch, number: int) -> str:
    """Node ``number``'s ``opensearch.yml``. Pure: computes text only."""
    nodes = list(cluster.numbers)
    lines = [
        "# Rendered by qexplorer.harness.opensearch from the QExplorer settings on every start.",
        f"cluster.name: {CLUSTER_NAME}",
        f"node.name: node-{number}",
        f"network.host: {LOCAL_HOST}",
        f"http.port: {cluster.http_port(number)}",
        f"transport.port: {cluster.transport_port(number)}",
        f"path.data: {cluster.node_dir(number) / 'data'}",
        f"path.logs: {cluster.node_dir(number) / 'logs'}",
        # a development machine's disk is often fuller than a server's 85% watermark
        "cluster.routing.allocation.disk.threshold_enabled: false",
    ]
    if len(nodes) == 1:
        lines.append("discovery.type: single-node")
    else:
        seeds = ", ".join(f'"{LOCAL_HOST}:{cluster.transport_port(n)}"' for n in nodes)
        managers = ", ".join(f'"node-{n}"' for n in nodes)
        lines += [f"discovery.seed_hosts: [{seeds}]",
                  f"cluster.initial_cluster_manager_nodes: [{managers}]"]
    return "\n".join(lines) + "\n"


def plugin_descriptor(name: str, classname: str, version: str) -> str:
    """A module's ``plugin-descriptor.properties``. Pure."""
    return (f"description={name} (QExplorer local cluster)\nversion={version}\nname={name}\n"
            f"classname={classname}\njava.version=17\nopensearch.version={version}\n")


# --- distribution ----------------------------------------------------------------------------


def ensure_distribution(cluster: LocalOpenSearch,
                        progress: Callable[[str], Any] | None = print) -> Path:
    """The distribution folder (``lib/`` and ``modules/``), fetched and sorted the first time."""
    version = cluster.settings.local_version
    dist = cluster.home / f"dist-{version}"
    if (dist / ".complete").is_file():
        return dist
    jars = fetch_maven_jars(POM, cluster.home / f"jars-{version}", {"opensearch.version": version},
                            expect=f"opensearch-{version}", label=f"OpenSearch {version}",
                            progress=progress)
    with _file_lock(cluster.home / ".dist.lock"):
        if (dist / ".complete").is_file():
            return dist
        shutil.rmtree(dist, ignore_errors=True)
        for folder in ("lib", "bin", "plugins"):  # the node checks that bin/ and plugins/ exist
            (dist / folder).mkdir(parents=True)
        placed: set[str] = set()
        for module, (prefixes, classname, policy) in MODULES.items():
            folder = dist / "modules" / module
            folder.mkdir(parents=True)
            for jar in jars.glob("*.jar"):
                if jar.name.startswith(prefixes):
                    shutil.copy2(jar, folder / jar.name)
                    placed.add(jar.name)
            (folder / "plugin-descriptor.properties").write_text(
                plugin_descriptor(module, classname, version))
            if policy:
                (folder / "plugin-security.policy").write_text(policy)
        for jar in jars.glob("*.jar"):
            if jar.name not in placed:
                shutil.copy2(jar, dist / "lib" / jar.name)
        for path in [dist, *dist.rglob("*")]:  # readable by the nodes' user
            path.chmod(0o755 if path.is_dir() else 0o644)
        (dist / ".complete").write_text(f"OpenSearch {version}\n")
    return dist


def _node_user(cluster: LocalOpenSearch) -> pwd.struct_passwd | None:
    """The user the nodes run as: None (this one) unless this process is root."""
    if os.geteuid() != 0:
        return None
    name = cluster.settings.local_user
    try:
        return pwd.getpwnam(name)
    except KeyError:
        proc = subprocess.run(["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", name],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BrokerError(f"cannot create the system user {name!r} the OpenSearch nodes "
                              f"run as (OpenSearch refuses root): {proc.stderr.strip()}") from None
        return pwd.getpwnam(name)


def _check_node_java() -> str:
    """``java``, when it is one OpenSearch 2.19 runs on: 17 to 23 (24 removed the security
    manager the node installs)."""
    java = _check_java()
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = parse_java_major(proc.stderr + proc.stdout)
    if major is not None and major > MAX_JAVA:
        raise BrokerError(f"{java} is Java {major}; OpenSearch "
                          f"{OpenSearchSettings().local_version} needs Java 17 to {MAX_JAVA} "
                          "(put one first on PATH)")
    return java


def _check_reachable_by(user: pwd.struct_passwd | None, home: Path) -> None:
    """Started by root, the nodes run as ``user``: every folder above their home must let
    others through, or the node cannot read its own jars."""
    if user is None:
        return
    for folder in [home, *home.parents]:
        if folder.exists() and not folder.stat().st_mode & 0o001:
            raise BrokerError(
                f"{folder} is closed to other users, and the OpenSearch nodes run as "
                f"{user.pw_name!r} (OpenSearch refuses root): set QEXPLORER_CACHE_DIR to a "
                f"folder they can reach, or chmod o+x {folder}")


# --- processes ---------------------------------------------------------------------------------


def _read_pid(cluster: LocalOpenSearch, number: int) -> int | None:
    try:
        pid = int(cluster.pid_file(number).read_text().strip())
    except (OSError, ValueError):
        return None
    if not _is_alive(pid):
        return None
    with contextlib.suppress(OSError):  # a recycled pid is not ours
        if MAIN_CLASS.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
    return pid


def _get(url: str, timeout_s: float = 2.0) -> dict | None:
    try:
        response = httpx.get(url, timeout=timeout_s)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def status(cluster: LocalOpenSearch) -> ClusterStatus:
    """Which local nodes run and answer, and the cluster's health."""
    nodes = []
    health: dict | None = None
    for number in cluster.numbers:
        url = cluster.url(number)
        answer = _get(f"{url}/_cluster/health")
        if answer is not None and health is None:
            health = answer
        nodes.append(NodeStatus(number, _read_pid(cluster, number), url, answer is not None))
    return ClusterStatus(tuple(nodes), health.get("status") if health else None,
                         int(health.get("number_of_nodes", 0)) if health else 0)


def start(cluster: LocalOpenSearch, wait_s: float = 180,
          progress: Callable[[str], Any] | None = print) -> ClusterStatus:
    """Start every local node that is not running and wait until all have joined one cluster.
    Idempotent. Raises :class:`BrokerError` with the end of a node's log when it dies or the
    cluster is not formed within ``wait_s`` seconds."""
    cluster.home.mkdir(parents=True, exist_ok=True)
    with _file_lock(cluster.home / ".cluster.lock"):
        if status(cluster).ready:
            return status(cluster)
        java = _check_node_java()
        dist = ensure_distribution(cluster, progress)
        user = _node_user(cluster)
        _check_reachable_by(user, cluster.home)
        t0 = time.monotonic()
        for number in cluster.numbers:
            if _read_pid(cluster, number) is None:
                _start_node(cluster, number, java, dist, user, progress)
        _wait_formed(cluster, wait_s)
        _say(progress, f"Local OpenSearch ready in {time.monotonic() - t0:.1f} s: "
                       + ", ".join(cluster.url(n) for n in cluster.numbers))
        return status(cluster)


def start_node(cluster: LocalOpenSearch, number: int, wait_s: float = 180) -> None:
    """Start one node that is down (after :func:`kill_node`) and wait until it rejoined."""
    with _file_lock(cluster.home / ".cluster.lock"):
        if _read_pid(cluster, number) is None:
            _start_node(cluster, number, _check_node_java(), ensure_distribution(cluster, None),
                        _node_user(cluster), None)
        _wait_formed(cluster, wait_s)


def _start_node(cluster: LocalOpenSearch, number: int, java: str, dist: Path,
                user: pwd.struct_passwd | None, progress) -> None:
    node = cluster.node_dir(number)
    config = node / "config"
    for folder in (config, node / "data", node / "logs"):
        folder.mkdir(parents=True, exist_ok=True)
    (config / "opensearch.yml").write_text(render_node_config(cluster, number))
    (config / "log4j2.properties").write_text(_LOG4J)
    (config / "jvm.options").write_text("")
    if user is not None:
        for path in [node, *node.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
    log = cluster.log_file(number)
    if log.exists():
        log.replace(log.with_name(log.name + ".1"))
    heap = cluster.settings.local_heap
    cmd = [java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
           "-Djava.security.manager=allow", f"-Dopensearch.path.home={dist}",
           f"-Dopensearch.path.conf={config}", "-Dopensearch.distribution.type=tar",
           "-Dopensearch.bundled_jdk=false", "-cp", f"{dist}/lib/*", MAIN_CLASS]
    _say(progress, f"Starting OpenSearch node {number} on {cluster.url(number)} (log: {log})...")
    with log.open("ab") as out:
        extra: dict[str, Any] = {}
        if user is not None:
            extra = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=node, start_new_session=True,
                                env={**os.environ, "HOME": str(node)}, **extra)
    cluster.pid_file(number).write_text(f"{proc.pid}\n")


def _wait_formed(cluster: LocalOpenSearch, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        for number in cluster.numbers:
            if _read_pid(cluster, number) is None:
                raise BrokerError(f"OpenSearch node {number} is not running; end of its log:\n"
                                  f"{_log_tail(cluster, number)}")
        now = status(cluster)
        if now.ready:
            return
        if time.monotonic() > deadline:
            raise BrokerError(f"the local OpenSearch cluster was not formed within "
                              f"{wait_s:.0f} s ({now.summary()}); end of node 1's log:\n"
                              f"{_log_tail(cluster, 1)}")
        time.sleep(0.5)


def _log_tail(cluster: LocalOpenSearch, number: int) -> str:
    try:
        return _tail(cluster.log_file(number).read_text(errors="replace"), 30)
    except OSError:
        return "(no log)"


def kill_node(cluster: LocalOpenSearch, number: int) -> bool:
    """SIGKILL one node (a crash, for the fault tests). True when it was running."""
    pid = _read_pid(cluster, number)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def stop(cluster: LocalOpenSearch, timeout_s: float = 30) -> bool:
    """Stop every local node (SIGTERM, then SIGKILL after ``timeout_s``). True when any ran."""
    stopped = False
    for number in cluster.numbers:
        pid = _read_pid(cluster, number)
        if pid is not None:
            _terminate(pid, timeout_s)
            stopped = True
        cluster.pid_file(number).unlink(missing_ok=True)
    return stopped


def reset(cluster: LocalOpenSearch) -> None:
    """Stop the local cluster and delete its nodes' data."""
    stop(cluster)
    for number in cluster.numbers:
        shutil.rmtree(cluster.node_dir(number), ignore_errors=True)
