"""The production deployment files, validated as data: docker-compose.yml, Dockerfile and
.dockerignore (there is no Docker engine on the development machine, so they never run here).

What is checked: the services and their wiring (KRaft Kafka, topic creation, the vLLM server and
its blue/green slot, the worker, the review service, the trainer), that every QExplorer
environment variable is a real setting (``config.settings.environment_variables()``) whose
value its settings slice accepts and reads back, that the worker's URLs name the vLLM
services and their ports, that the vLLM command serves a model under its card's version (run
with stub ``vllm``/``python3``), that published ports stay on loopback, and that the image gets
every package and data file ``pip install .`` needs.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import SecretStr

from agents.extractor import registry
from qexplorer.config import KafkaSettings, Settings
from qexplorer.config.settings import environment_variables, slices
from qexplorer.serving.server import served_name

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
#: vLLM's default share of GPU memory when --gpu-memory-utilization is not given.
VLLM_DEFAULT_GPU_MEMORY = 0.9


# --- helpers -------------------------------------------------------------------------------------


def _interpolate(value: str, env: Mapping[str, str] | None = None) -> str:
    """Compose's variable interpolation of ``value`` with ``env`` (default: nothing set):
    ``$$`` is a literal ``$``; ``${VAR:-default}``/``${VAR-default}`` fall back to the default,
    ``${VAR}``/``$VAR`` to an empty string; ``${VAR:?message}`` is an error when unset."""
    env = env or {}
    pattern = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")

    def replace(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op and op.endswith("?") and empty:
            raise ValueError(f"{name} must be set: {arg}")
        if op and op.endswith("-") and empty:
            return arg
        return value or ""

    return pattern.sub(replace, value)


def _environment(service: dict) -> dict[str, str]:
    """A service's environment as a mapping (list or mapping form), values interpolated."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {k: _interpolate("" if v is None else str(v)) for k, v in raw.items()}


def _raw_environment(service: dict) -> dict[str, str]:
    """A service's environment as written (before interpolation)."""
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def _built_here(service: dict) -> bool:
    """True when the service's image is built from this repository's Dockerfile."""
    build = service.get("build")
    if isinstance(build, str):
        return build in (".", "./")
    if isinstance(build, dict):
        return build.get("context", ".") in (".", "./") and build.get(
            "dockerfile", "Dockerfile") == "Dockerfile"
    return False


QEXPLORER_SERVICES = sorted(name for name, svc in SERVICES.items() if _built_here(svc))


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        instruction, _, args = full.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def _dockerfile_env() -> dict[str, str]:
    """The variables the Dockerfile's ENV instructions set (key=value form)."""
    env: dict[str, str] = {}
    for instruction, args in _dockerfile_instructions():
        if instruction == "ENV":
            for part in shlex.split(args):
                key, sep, value = part.partition("=")
                assert sep, f"use ENV key=value, not the legacy form: {args!r}"
                env[key] = value
    return env


def _settings_env_names() -> dict[str, tuple[str, str]]:
    """Upper-cased environment variable name -> (settings slice, field) it sets."""
    names: dict[str, tuple[str, str]] = {}
    for row in environment_variables():
        assert row["variable"].upper() not in names, f"two settings read {row['variable']}"
        names[row["variable"].upper()] = (row["slice"], row["field"])
    return names


def _is_qexplorer_variable(name: str) -> bool:
    """Variables QExplorer reads: its prefix, plus the conventional KAFKA_BOOTSTRAP."""
    return name.startswith("QEXPLORER_") or name == "KAFKA_BOOTSTRAP"


def _as_env_text(value: object) -> str:
    """A parsed settings value written back as the environment would spell it."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Enum):
        return str(value.value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _listeners(spec: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)} (empty host: every interface)."""
    out: dict[str, tuple[str, int]] = {}
    for part in spec.split(","):
        name, _, address = part.strip().partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def _ports(service: dict) -> list[tuple[str | None, int, int]]:
    """(host ip or None, host port, container port) of each published port, short or long
    syntax."""
    out = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            out.append((entry.get("host_ip"), int(entry["published"]), int(entry["target"])))
            continue
        spec = str(entry).split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            out.append((parts[0].strip("[]"), int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            out.append((None, int(parts[0]), int(parts[1])))
        else:
            out.append((None, 0, int(parts[0])))  # an ephemeral host port, on every interface
    return out


def _volumes(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume, short or long syntax."""
    out = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            out.append((entry.get("source", ""), entry["target"], bool(entry.get("read_only"))))
            continue
        source, target, *mode = str(entry).split(":")
        out.append((source, target, "ro" in (mode[0].split(",") if mode else [])))
    return out


def _mount_of(service: dict, path: str) -> tuple[str, str, bool] | None:
    """The volume a container path lives on (the deepest mount containing it)."""
    mounts = [v for v in _volumes(service)
              if path == v[1] or path.startswith(v[1].rstrip("/") + "/")]
    return max(mounts, key=lambda v: len(v[1]), default=None)


def _condition(service: dict, dependency: str) -> str | None:
    """The depends_on condition on ``dependency`` (service_started for the list form)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return "service_started" if dependency in deps else None
    entry = deps.get(dependency)
    return None if entry is None else (entry or {}).get("condition", "service_started")


def _vllm_argv(service_name: str, tmp_path: Path, card: dict | None) -> tuple[int, list[str]]:
    """Run the service's entrypoint+command under /bin/sh with stub ``vllm`` and ``python3``
    and a model directory in ``tmp_path`` (with ``card`` as its qexplorer.json, when given):
    the exit code and the argv vLLM would have been started with."""
    service = SERVICES[service_name]
    entrypoint, command = service["entrypoint"], service["command"]
    assert entrypoint[:2] == ["/bin/sh", "-c"] and len(command) == 1, "a shell command"
    script = _interpolate(command[0]).replace("/models/", f"{tmp_path}/models/")
    for slot in ("current", "next"):
        model = tmp_path / "models" / slot
        model.mkdir(parents=True, exist_ok=True)
        if card is not None:
            (model / "qexplorer.json").write_text(json.dumps(card))
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    argv_file = tmp_path / "argv"
    (stubs / "vllm").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{argv_file}"\n')
    (stubs / "vllm").chmod(0o755)
    if not (stubs / "python3").exists():
        (stubs / "python3").symlink_to(sys.executable)
    argv_file.unlink(missing_ok=True)
    env = {"PATH": f"{stubs}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
    argv = argv_file.read_text().splitlines() if argv_file.exists() else []
    return done.returncode, argv


def _option(argv: list[str], name: str) -> str | None:
    """The value of ``--name value`` or ``--name=value`` in an argv."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _docker_pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex on slash-separated paths relative to the context
    (Docker's rules: ``**`` spans directories, ``*`` and ``?`` stay within one)."""
    pattern = os.path.normpath(pattern.strip()).lstrip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def _dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    """(is an exception ``!pattern``, regex) of each .dockerignore line."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, _docker_pattern(line[1:] if negated else line)))
    return rules


def _ignored(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """True when the build context leaves ``path`` out: the last rule matching it or one of
    its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in rules:
        if any(regex.match(c) for c in candidates):
            ignored = not negated
    return ignored


def _packages() -> list[str]:
    """Top-level packages ``[tool.setuptools.packages.find] include`` selects."""
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()
                  and any(fnmatch.fnmatch(p.name, pattern) for pattern in include))


def _copied_sources() -> list[str]:
    """Source paths of the Dockerfile's COPY/ADD instructions (no --from stages)."""
    sources = []
    for instruction, args in _dockerfile_instructions():
        if instruction not in ("COPY", "ADD"):
            continue
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        sources += [w.rstrip("/") or "." for w in paths[:-1]]
    return sources


def _package_files(package: str) -> Iterator[Path]:
    """Files of a package directory, without bytecode caches."""
    for path in sorted((ROOT / package).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield path


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No QExplorer variable from the caller's environment and no .env file in the way."""
    for name in list(os.environ):
        if _is_qexplorer_variable(name):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


# --- services ------------------------------------------------------------------------------------


def test_the_services_and_their_profiles() -> None:
    nodes = {"opensearch-1", "opensearch-2", "opensearch-3"}
    assert set(SERVICES) == {"kafka", "topics", "vllm", "vllm-next", "worker", "review",
                             "trainer", "worker-opensearch", *nodes}
    assert SERVICES["vllm-next"].get("profiles") == ["rollout"]
    assert SERVICES["trainer"].get("profiles") == ["train"]
    for name in (*nodes, "worker-opensearch"):
        assert SERVICES[name].get("profiles") == ["opensearch"]
    for name in ("kafka", "topics", "vllm", "worker", "review"):
        assert not SERVICES[name].get("profiles"), f"{name} must start with a plain `up`"
    assert QEXPLORER_SERVICES == ["review", "topics", "trainer", "worker", "worker-opensearch"]


def test_the_opensearch_profile_is_a_quorum_the_workers_know() -> None:
    nodes = sorted(n for n in SERVICES if n.startswith("opensearch-"))
    assert len(nodes) % 2 == 1, "an odd number of master-eligible nodes keeps a quorum"
    env = SERVICES["worker-opensearch"]["environment"]
    assert env["QEXPLORER_SEARCH_BACKEND"] == "opensearch"
    hosts = [urlsplit(h).hostname for h in env["QEXPLORER_OPENSEARCH_HOSTS"].split(",")]
    assert hosts == nodes
    for node in nodes:
        assert SERVICES[node]["environment"]["node.name"] == node
        assert not SERVICES[node].get("ports"), "the cluster stays on the compose network"


def test_named_volumes_are_declared_and_used() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    used = {source for svc in SERVICES.values() for source, _, _ in _volumes(svc)
            if source and not source.startswith((".", "/", "~"))}
    assert used == declared


# --- kafka ---------------------------------------------------------------------------------------


def test_kafka_image_is_the_local_broker_version(clean_env: pytest.MonkeyPatch) -> None:
    assert SERVICES["kafka"]["image"] == f"apache/kafka:{KafkaSettings().local_version}"


def test_kafka_runs_single_node_kraft() -> None:
    env = _environment(SERVICES["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = _listeners(env["KAFKA_LISTENERS"])
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert voters == [f"{env['KAFKA_NODE_ID']}@kafka:{listeners[controller][1]}"]
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    assert controller not in advertised and set(advertised) <= set(listeners)
    inter_broker = env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT")
    assert advertised[inter_broker] == ("kafka", listeners[inter_broker][1])
    # kafka-storage format needs a base64 (URL-safe, unpadded) 16-byte UUID
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16


def test_kafka_creates_no_topics_and_replicates_internal_topics_once() -> None:
    env = _environment(SERVICES["kafka"])
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # `qexplorer topics create` does
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
                "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
                "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR"):
        assert env[key] == "1", key


def test_kafka_keeps_its_log_on_the_data_volume() -> None:
    kafka = SERVICES["kafka"]
    log_dirs = _environment(kafka).get("KAFKA_LOG_DIRS")
    assert log_dirs, "unset, the image logs to /tmp/kraft-combined-logs, off the volume"
    for log_dir in log_dirs.split(","):
        mount = _mount_of(kafka, log_dir)
        assert mount is not None and mount[0] in COMPOSE["volumes"] and not mount[2], log_dir


def test_kafka_healthcheck_asks_the_broker_listener() -> None:
    kafka = SERVICES["kafka"]
    test = " ".join(kafka["healthcheck"]["test"])
    port = _listeners(_environment(kafka)["KAFKA_LISTENERS"])["PLAINTEXT"][1]
    assert "kafka-broker-api-versions.sh" in test and f"localhost:{port}" in test
    assert kafka["healthcheck"]["retries"] >= 1


def test_qexplorer_containers_bootstrap_from_the_advertised_listener() -> None:
    advertised = _listeners(_environment(SERVICES["kafka"])["KAFKA_ADVERTISED_LISTENERS"])
    inside = {f"{host}:{port}" for host, port in advertised.values() if host == "kafka"}
    for name in QEXPLORER_SERVICES:
        assert _environment(SERVICES[name])["KAFKA_BOOTSTRAP"] in inside, name


# --- topics --------------------------------------------------------------------------------------


def test_topics_are_created_once_kafka_is_healthy() -> None:
    topics = SERVICES["topics"]
    assert _built_here(topics)
    assert topics["command"] == ["topics", "create"]
    assert _condition(topics, "kafka") == "service_healthy"
    assert str(topics.get("restart", "no")) == "no"  # a one-shot job


# --- vllm ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vllm", "vllm-next"])
def test_vllm_image_is_pinned_to_the_release_serving_uses(name: str) -> None:
    image = SERVICES[name]["image"]
    repository, _, tag = image.partition(":")
    assert repository == "vllm/vllm-openai"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), f"pin a release, not {tag or 'latest'!r}"
    pins = (ROOT / "qexplorer" / "serving" / "requirements-vllm-cuda.txt").read_text()
    assert f"vllm=={tag[1:]}" in pins.split()


@pytest.mark.parametrize("name", ["vllm", "vllm-next"])
def test_vllm_reserves_an_nvidia_gpu(name: str) -> None:
    devices = SERVICES[name]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
               and (d.get("count") or d.get("device_ids")) for d in devices)


@pytest.mark.parametrize("name", ["vllm", "vllm-next"])
def test_vllm_mounts_the_models_read_only_and_stays_offline(name: str) -> None:
    service = SERVICES[name]
    assert ("models", "/models", True) in _volumes(service)
    assert _environment(service)["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize(("name", "slot"), [("vllm", "current"), ("vllm-next", "next")])
def test_vllm_serves_its_slot_under_the_model_card_version(name: str, slot: str,
                                                           tmp_path: Path) -> None:
    version = "qx-dpo-8900fb4b-00fea2"
    code, argv = _vllm_argv(name, tmp_path, {"version": version})
    assert code == 0 and argv[:2] == ["serve", f"{tmp_path}/models/{slot}"]
    assert _option(argv, "--served-model-name") == version
    # the same name `qexplorer serve-model` gives the directory
    assert served_name(str(tmp_path / "models" / slot)) == version
    assert _option(argv, "--host") == "0.0.0.0"


def test_vllm_refuses_a_model_without_a_card(tmp_path: Path) -> None:
    code, argv = _vllm_argv("vllm", tmp_path, card=None)
    assert code != 0 and argv == []  # never served under an empty name


def test_vllm_healthcheck_asks_the_served_port(tmp_path: Path) -> None:
    for name in ("vllm", "vllm-next"):
        _, argv = _vllm_argv(name, tmp_path, {"version": "v1"})
        test = " ".join(SERVICES[name]["healthcheck"]["test"])
        assert f"localhost:{_option(argv, '--port')}/health" in test, name


def test_blue_and_green_fit_on_one_gpu_together(tmp_path: Path) -> None:
    shares = []
    for name in ("vllm", "vllm-next"):
        devices = SERVICES[name]["deploy"]["resources"]["reservations"]["devices"]
        assert not any(d.get("device_ids") for d in devices), "distinct GPUs: adapt this test"
        _, argv = _vllm_argv(name, tmp_path, {"version": "v1"})
        shares.append(float(_option(argv, "--gpu-memory-utilization")
                            or VLLM_DEFAULT_GPU_MEMORY))
    assert sum(shares) <= 0.95, shares


def test_vllm_next_is_the_same_server_in_another_slot(tmp_path: Path) -> None:
    blue, green = SERVICES["vllm"], SERVICES["vllm-next"]
    assert blue["image"] == green["image"]
    _, blue_argv = _vllm_argv("vllm", tmp_path, {"version": "v1"})
    _, green_argv = _vllm_argv("vllm-next", tmp_path, {"version": "v1"})
    assert blue_argv[1] != green_argv[1]
    assert [a for a in blue_argv if a != blue_argv[1]] == [a for a in green_argv
                                                            if a != green_argv[1]]


def test_one_api_key_variable_reaches_server_and_workers() -> None:
    key = _raw_environment(SERVICES["worker"])["QEXPLORER_OPENAI_API_KEY"]
    assert re.fullmatch(r"\$\{\w+(:?-[^}]*)?\}", key), "interpolate the key, never write it"
    for name in ("vllm", "vllm-next"):
        assert _raw_environment(SERVICES[name])["VLLM_API_KEY"] == key


# --- worker and trainer --------------------------------------------------------------------------


def test_worker_waits_for_topics_and_the_model_server_and_restarts() -> None:
    worker = SERVICES["worker"]
    assert _built_here(worker) and worker["command"] == ["worker"]
    assert _condition(worker, "topics") == "service_completed_successfully"
    assert _condition(worker, "vllm") == "service_healthy"
    assert worker.get("restart") in ("always", "unless-stopped", "on-failure")


def test_worker_state_is_on_a_volume(clean_env: pytest.MonkeyPatch) -> None:
    worker = SERVICES["worker"]
    for key, value in {**_dockerfile_env(), **_environment(worker)}.items():
        clean_env.setenv(key, value)
    settings = Settings.load()
    for path in (settings.worker_dir(), settings.worker_dir() / "index"):
        mount = _mount_of(worker, str(path))
        assert mount is not None and mount[0] in COMPOSE["volumes"] and not mount[2], path


def test_worker_urls_name_the_vllm_services_and_their_ports(clean_env: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    env = _environment(SERVICES["worker"])
    for key, value in env.items():
        clean_env.setenv(key, value)
    extractor = Settings.load().extractor
    assert extractor.backend == "openai"
    rollout = env["QEXPLORER_ROLLOUT_BASE_URLS"].split(",")
    for url, service in [(extractor.openai_base_url, "vllm"), (rollout[0], "vllm-next")]:
        parts = urlsplit(url)
        _, argv = _vllm_argv(service, tmp_path, {"version": "v1"})
        assert parts.scheme == "http" and parts.hostname == service, url
        assert parts.port == int(_option(argv, "--port")), url
        assert parts.path.rstrip("/") == "/v1", url
    assert extractor.allowed_model_urls == {"http://vllm:8000/v1", "http://vllm-next:8000/v1"}


def test_trainer_is_a_one_off_that_writes_to_the_models_volume() -> None:
    trainer = SERVICES["trainer"]
    assert _built_here(trainer)
    assert str(trainer.get("restart", "no")) == "no"
    command = trainer["command"]
    assert command[:2] == ["train", "all"]
    out = command[command.index("--out") + 1]
    for path in (out, _environment(trainer)["QEXPLORER_CACHE_DIR"]):
        mount = _mount_of(trainer, path)
        assert mount is not None and mount[0] == "models" and not mount[2], path
    data = command[command.index("--data") + 1]
    assert _mount_of(trainer, data) is not None, data
    # vllm serves the same volume: what the trainer writes is what gets rolled out
    assert ("models", "/models", True) in _volumes(SERVICES["vllm"])


# --- QExplorer environment vs the settings ------------------------------------------------------


@pytest.mark.parametrize("name", [*QEXPLORER_SERVICES, "Dockerfile"])
def test_every_qexplorer_variable_is_a_setting(name: str) -> None:
    env = _dockerfile_env() if name == "Dockerfile" else _environment(SERVICES[name])
    known = _settings_env_names()
    variables = [k for k in env if _is_qexplorer_variable(k)]
    assert variables
    unknown = [k for k in variables if k.upper() not in known]
    assert not unknown, f"{name}: not settings (silently ignored): {unknown}"
    assert known["KAFKA_BOOTSTRAP"] == ("kafka", "bootstrap")


@pytest.mark.parametrize("name", QEXPLORER_SERVICES)
def test_settings_accept_what_each_container_gets(name: str,
                                                  clean_env: pytest.MonkeyPatch) -> None:
    env = {**_dockerfile_env(), **_environment(SERVICES[name])}  # compose wins over ENV
    for key, value in env.items():
        clean_env.setenv(key, value)
    settings = Settings.load()  # raises SettingsError naming a bad value's variable
    registry.check(settings.extractor)  # what `qexplorer` checks at start
    known = _settings_env_names()
    parts = dict(slices())
    checked = 0
    for key, value in env.items():
        if _is_qexplorer_variable(key):
            part_name, field = known[key.upper()]
            part = parts[part_name]()  # the slice, read from this environment alone
            assert part == getattr(settings, part_name), part_name
            assert field in part.model_fields_set, (key, "not read from the environment")
            assert _as_env_text(getattr(part, field)) == value, (key, part_name, field)
            checked += 1
    assert checked


def test_interpolation_helper_follows_compose() -> None:
    assert _interpolate("${A:-}") == "" and _interpolate("${A:-x}") == "x"
    assert _interpolate("${A-x}", {"A": ""}) == "" and _interpolate("${A:-x}", {"A": ""}) == "x"
    assert _interpolate("$$(cmd) $A ${B}", {"A": "1", "B": "2"}) == "$(cmd) 1 2"
    with pytest.raises(ValueError):
        _interpolate("${A:?needed}")


# --- published ports -----------------------------------------------------------------------------


def test_published_ports_bind_loopback_and_a_reachable_listener() -> None:
    published = {name: _ports(svc) for name, svc in SERVICES.items() if svc.get("ports")}
    assert published, "the host's platform services publish to kafka on a loopback port"
    host_ports = [port for ports in published.values() for _, port, _ in ports]
    assert len(host_ports) == len(set(host_ports)), "two services on one host port"
    for name, ports in published.items():
        for host_ip, host_port, container_port in ports:
            assert host_ip in LOOPBACK, f"{name} publishes {container_port} on every interface"
            assert host_port > 0
            if name == "kafka":
                env = _environment(SERVICES["kafka"])
                listening = [n for n, (_, p) in _listeners(env["KAFKA_LISTENERS"]).items()
                             if p == container_port]
                assert listening, f"kafka publishes {container_port}, where nothing listens"
                host, port = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])[listening[0]]
                # a host client is redirected to the advertised address: it must be this one
                assert host in LOOPBACK and port == host_port, listening[0]
    for name in ("vllm", "vllm-next", "worker", "topics", "trainer"):
        assert all(ip in LOOPBACK for ip, _, _ in _ports(SERVICES[name])), name


def test_port_parsing_helper() -> None:
    service = {"ports": ["8000:8000", "127.0.0.1:9:90/tcp", "[::1]:1:2", "5",
                         {"target": 3, "published": 4, "host_ip": "127.0.0.1"}]}
    assert _ports(service) == [(None, 8000, 8000), ("127.0.0.1", 9, 90), ("::1", 1, 2),
                               (None, 0, 5), ("127.0.0.1", 4, 3)]


# --- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_copies_every_package_pip_installs() -> None:
    packages = _packages()
    assert {"qexplorer", "streams", "agents", "trainer", "schemas"} <= set(packages)
    sources = _copied_sources()
    missing = [p for p in packages if p not in sources and "." not in sources]
    assert not missing, f"COPY these or `pip install .` leaves them out: {missing}"


def test_dockerfile_copies_the_build_metadata_before_installing() -> None:
    instructions = _dockerfile_instructions()
    sources = _copied_sources()
    readme = PYPROJECT["project"]["readme"]
    assert "pyproject.toml" in sources or "." in sources
    assert readme in sources or "." in sources
    installs = [i for i, (ins, args) in enumerate(instructions)
                if ins == "RUN" and re.search(r"\bpip install (\S+ )*\.(\s|$)", args + " ")]
    assert installs, "RUN pip install ."
    last_copy = max(i for i, (ins, _) in enumerate(instructions) if ins in ("COPY", "ADD"))
    assert installs[-1] > last_copy


def test_every_data_file_reaches_the_installed_package() -> None:
    package_data: dict[str, list[str]] = PYPROJECT["tool"]["setuptools"].get("package-data", {})
    run = " ".join(args for ins, args in _dockerfile_instructions() if ins == "RUN")
    missing = []
    for package in _packages():
        for path in _package_files(package):
            if path.suffix == ".py":
                continue
            rel = path.relative_to(ROOT / package).as_posix()
            # package-data globs are relative to the (sub)package they name
            owners = [parent for parent in path.parents
                      if parent.is_relative_to(ROOT / package) and
                      (parent / "__init__.py").is_file()]
            if any(fnmatch.fnmatch(path.relative_to(owner).as_posix(), glob)
                   for owner in owners
                   for glob in package_data.get(
                       owner.relative_to(ROOT).as_posix().replace("/", "."), [])):
                continue
            folder = path.parent.relative_to(ROOT).as_posix()
            if re.search(rf'cp -r {re.escape(folder)} "\$site/{re.escape(package)}/"', run):
                continue
            missing.append(f"{package}/{rel}")
    assert not missing, f"not in the wheel (package-data) nor copied by the Dockerfile: {missing}"


def test_dockerfile_runs_the_console_script_on_the_supported_python() -> None:
    instructions = _dockerfile_instructions()
    # the image is the last stage (an earlier one builds the folding's wheel)
    base = [args for ins, args in instructions if ins == "FROM"][-1].split()[0]
    match = re.fullmatch(r"python:(\d+)\.(\d+)(?:\.\d+)?(?:-[\w.]+)?", base)
    assert match, base
    major, minor = int(match[1]), int(match[2])
    requires = PYPROJECT["project"]["requires-python"]
    assert f">={major}.{minor}" in requires and f"<{major}.{minor + 1}" in requires
    entrypoint = next(args for ins, args in instructions if ins == "ENTRYPOINT")
    assert yaml.safe_load(entrypoint) == ["qexplorer"]
    assert "qexplorer" in PYPROJECT["project"]["scripts"]


def test_dockerfile_state_and_cache_are_on_the_declared_volume(
        clean_env: pytest.MonkeyPatch) -> None:
    env = _dockerfile_env()
    volumes = [v for ins, args in _dockerfile_instructions() if ins == "VOLUME"
               for v in yaml.safe_load(args)]
    for key in ("QEXPLORER_STATE_DIR", "QEXPLORER_CACHE_DIR"):
        assert any(env[key] == v or env[key].startswith(v + "/") for v in volumes), key
    # and the compose worker mounts its state volume exactly there
    assert ("worker-state", env["QEXPLORER_STATE_DIR"], False) in _volumes(SERVICES["worker"])


# --- .dockerignore -------------------------------------------------------------------------------


def test_dockerignore_keeps_the_context_small_and_has_no_syntax_directive() -> None:
    text = (ROOT / ".dockerignore").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    rules = _dockerignore_rules()
    for path in (".venv/bin/python", ".cache/models/x.bin", ".git/HEAD", "runs/a/b.json",
                 "__pycache__/x.pyc", "agents/__pycache__/index.cpython-311.pyc",
                 "agents/extractor/__pycache__/keywords.cpython-311.pyc", ".env",
                 "native/fold/target/release/libqexplorer_fold.so"):
        assert _ignored(path, rules), path


def test_dockerignore_keeps_everything_the_image_copies() -> None:
    rules = _dockerignore_rules()
    kept_out = []
    for source in _copied_sources():
        path = ROOT / source
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()
                                               and "__pycache__" not in p.parts
                                               and "target" not in p.parts]  # Rust builds
        assert files, f"COPY {source}: nothing there"
        kept_out += [f.relative_to(ROOT).as_posix() for f in files
                     if _ignored(f.relative_to(ROOT).as_posix(), rules)]
    assert not kept_out


def test_dockerignore_matching_helper() -> None:
    rules = [(False, _docker_pattern("**/__pycache__")), (False, _docker_pattern("*.md")),
             (True, _docker_pattern("README.md")), (False, _docker_pattern("runs"))]
    assert _ignored("a/b/__pycache__/c.pyc", rules) and _ignored("__pycache__", rules)
    assert _ignored("NOTES.md", rules) and not _ignored("README.md", rules)
    assert not _ignored("docs/x.md", rules)  # `*` does not cross directories
    assert _ignored("runs/x/y", rules) and not _ignored("agents/runs.py", rules)
