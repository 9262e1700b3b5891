"""The settings, in slices, as the environment fills them: validation at start with errors that
name the environment variable, secrets that stay masked, URL normalisation, precedence of the
sources (arguments > environment > .env > defaults), the ``KAFKA_BOOTSTRAP`` alias, validated
copies (``replace``), the environment of a child process (``to_env``), the list of every
variable, the topics a deployment resolves, and how the ``qexplorer`` command reports a bad
value. (The local broker's use of the settings is in test_broker_config.py.)"""

from __future__ import annotations

import json
import os
import re
import ssl
from pathlib import Path

import certifi
import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

from agents.extractor import registry
from qexplorer.cli.main import app
from qexplorer.config import (
    ExtractorSettings,
    KafkaSettings,
    MetricsSettings,
    SecurityProtocol,
    Settings,
    SettingsError,
)
from qexplorer.config.settings import env_name, environment_variables, slices
from schemas.topics import (
    DEAD_LETTER,
    DETECTIONS,
    LISTINGS,
    MODEL_ROLLOUTS,
    REGISTRY,
    SEARCH_FEEDBACK,
    TOXIC_ITEMS,
    Topics,
)
from streams.app import credentials

API_KEY = "sk-test-3f9a1c"
SASL_PASSWORD = "pw-test-77d2e0"
MASK = "**********"
#: The variable names a SettingsError message starts its "; "-separated parts with.
_NAMED = re.compile(r"(?:^|; )([A-Z][A-Z0-9_]*):")

# every test sees only the settings it sets (tests/unit/conftest.py)
pytestmark = pytest.mark.usefixtures("clean_env")


def _setenv(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """Set environment variables given as keyword arguments (names as written)."""
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def _named(error: Exception) -> set[str]:
    """The environment variables a SettingsError message names, one per invalid value."""
    return set(_NAMED.findall(str(error)))


def _secret_settings(monkeypatch: pytest.MonkeyPatch, protocol: str = "SASL_SSL") -> Settings:
    """Settings with both secrets set through the environment."""
    _setenv(monkeypatch, QEXPLORER_OPENAI_API_KEY=API_KEY,
            QEXPLORER_KAFKA_SECURITY_PROTOCOL=protocol,
            QEXPLORER_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
            QEXPLORER_KAFKA_SASL_USERNAME="qx-worker",
            QEXPLORER_KAFKA_SASL_PASSWORD=SASL_PASSWORD)
    return Settings.load()


# --- invalid values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("QEXPLORER_TOPIC_PARTITIONS", "-1"),
        ("QEXPLORER_TOPIC_PARTITIONS", "0"),
        ("QEXPLORER_TOPIC_PARTITIONS", "four"),
        ("QEXPLORER_TOPIC_REPLICATION", "0"),
        ("QEXPLORER_TOPIC_RETENTION_MS", '{"detections": "a week"}'),
        ("QEXPLORER_TOPIC_RETENTION_MS", "[604800000]"),
        ("QEXPLORER_TOPIC_RETENTION_MS", "7 days"),
        ("QEXPLORER_SERVE_PORT", "70000"),
        ("QEXPLORER_SERVE_PORT", "0"),
        ("QEXPLORER_SERVE_DEVICE", "tpu"),
        ("QEXPLORER_KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("QEXPLORER_KAFKA_SASL_MECHANISM", "scram-sha-256"),  # faust refuses it at start
        ("QEXPLORER_LOCAL_KAFKA_PORT", "70000"),
        ("QEXPLORER_LOCAL_KAFKA_CONTROLLER_PORT", "70000"),
        ("QEXPLORER_OPENAI_TIMEOUT_S", "thirty"),
        ("QEXPLORER_OPENAI_TIMEOUT_S", "0"),
        ("QEXPLORER_SERVE_READY_TIMEOUT_S", "5m"),
        ("QEXPLORER_INDEX_COMMIT_INTERVAL_S", "half a second"),
        ("QEXPLORER_INDEX_COMMIT_DOCS", "0"),
        ("QEXPLORER_EXPLORE_WAIT_INDEX_S", "-1"),
        ("QEXPLORER_QUERIES_PER_SEED", "17"),
        ("QEXPLORER_RESULTS_PER_QUERY", "0"),
        ("QEXPLORER_SEARCH_THREADS", "0"),
        ("QEXPLORER_OPENAI_CONCURRENCY", "0"),
        ("QEXPLORER_EXTRACTIVE", "perhaps"),
        ("QEXPLORER_BLEND", '{"popularity": 1}'),
        ("QEXPLORER_BLEND", '{"probe": -1}'),
        ("QEXPLORER_SERVE_MAX_MODEL_LEN", "8"),
        ("QEXPLORER_LOG_FORMAT", "xml"),
        ("QEXPLORER_WEB_PORT", "70000"),
        ("QEXPLORER_METRICS_PORT", "-1"),
        ("QEXPLORER_METRICS_PORT", "ninety"),
    ],
)
def test_an_invalid_value_is_refused_naming_its_variable(clean_env: pytest.MonkeyPatch,
                                                         variable: str, value: str) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        Settings.load()
    assert _named(caught.value) == {variable}, str(caught.value)


@pytest.mark.parametrize(
    ("part", "values", "variable"),
    [
        ("metrics", {"port": "x"}, "QEXPLORER_METRICS_PORT"),
        ("serving", {"port": 70000}, "QEXPLORER_SERVE_PORT"),
        ("exploration", {"queries_per_seed": 17}, "QEXPLORER_QUERIES_PER_SEED"),
        ("kafka", {"local_port": 0}, "QEXPLORER_LOCAL_KAFKA_PORT"),
        ("topic", {"partitions": 0}, "QEXPLORER_TOPIC_PARTITIONS"),
        ("worker", {"log_format": "xml"}, "QEXPLORER_LOG_FORMAT"),
    ],
)
def test_an_invalid_argument_is_refused_naming_its_variable(part: str, values: dict,
                                                            variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.load(**{part: values})
    assert _named(caught.value) == {variable}, str(caught.value)


def test_every_invalid_value_of_a_slice_is_reported_at_once(
        clean_env: pytest.MonkeyPatch) -> None:
    _setenv(clean_env, QEXPLORER_SERVE_PORT="99999", QEXPLORER_SERVE_READY_TIMEOUT_S="soon",
            QEXPLORER_SERVE_DEVICE="tpu")
    with pytest.raises(SettingsError) as caught:
        Settings.load()
    assert _named(caught.value) == {"QEXPLORER_SERVE_PORT", "QEXPLORER_SERVE_READY_TIMEOUT_S",
                                    "QEXPLORER_SERVE_DEVICE"}


def test_every_invalid_value_is_reported_at_once(clean_env: pytest.MonkeyPatch) -> None:
    _setenv(clean_env, QEXPLORER_TOPIC_PARTITIONS="-1", QEXPLORER_SERVE_PORT="99999",
            QEXPLORER_OPENAI_TIMEOUT_S="soon")
    with pytest.raises(SettingsError) as caught:
        Settings.load()
    assert _named(caught.value) == {"QEXPLORER_TOPIC_PARTITIONS", "QEXPLORER_SERVE_PORT",
                                    "QEXPLORER_OPENAI_TIMEOUT_S"}


def test_the_transformers_extractor_needs_a_model(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("QEXPLORER_EXTRACTOR", "transformers")
    settings = Settings.load()
    with pytest.raises(ValueError, match="QEXPLORER_MODEL") as caught:
        registry.check(settings.extractor)
    assert "QEXPLORER_EXTRACTOR=transformers" in str(caught.value)
    clean_env.setenv("QEXPLORER_MODEL", "/models/dpo")
    settings = Settings.load()
    registry.check(settings.extractor)  # no error now
    assert settings.extractor.backend == "transformers"
    assert settings.extractor.model == "/models/dpo"


def test_an_unknown_extractor_is_refused_naming_its_variable(
        clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("QEXPLORER_EXTRACTOR", "bert")
    extractor = Settings.load().extractor
    with pytest.raises(ValueError, match="QEXPLORER_EXTRACTOR") as caught:
        registry.check(extractor)
    assert "'bert'" in str(caught.value)
    for name in registry.BACKENDS:  # every backend the registry knows passes, given a model
        registry.check(extractor.changed(backend=name, model="/models/dpo"))


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_a_sasl_protocol_needs_a_mechanism(clean_env: pytest.MonkeyPatch, protocol: str) -> None:
    clean_env.setenv("QEXPLORER_KAFKA_SECURITY_PROTOCOL", protocol)
    with pytest.raises(SettingsError, match="QEXPLORER_KAFKA_SASL_MECHANISM") as caught:
        Settings.load()
    assert f"security_protocol={protocol}" in str(caught.value)
    clean_env.setenv("QEXPLORER_KAFKA_SASL_MECHANISM", "PLAIN")
    assert Settings.load().kafka.security_protocol is SecurityProtocol(protocol)


def test_settings_are_frozen() -> None:
    settings = Settings.load()
    with pytest.raises(ValidationError):
        settings.topic.partitions = 8  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.topic = settings.topic  # type: ignore[misc]
    assert settings.topic.partitions == 4


# --- validated copies ----------------------------------------------------------------------------


def test_replace_is_a_validated_copy_that_leaves_the_original_alone(tmp_path: Path) -> None:
    original = Settings.load()
    copy = original.replace(topic={"prefix": "p."}, worker={"app_id": "a", "worker_id": "w3"},
                            paths={"state_dir": tmp_path})
    assert (copy.topic.prefix, copy.worker.app_id, copy.worker.worker_id) == ("p.", "a", "w3")
    assert copy.topics.listings == "p.listings"
    assert copy.worker_dir() == tmp_path / "a-w3"
    assert copy.extractor == original.extractor and copy.kafka == original.kafka  # untouched
    assert (original.topic.prefix, original.worker.app_id) == ("", "qexplorer")
    assert original.topics.listings == "listings"


@pytest.mark.parametrize(
    ("part", "values", "variable"),
    [
        ("metrics", {"port": -5}, "QEXPLORER_METRICS_PORT"),
        ("metrics", {"port": "ninety"}, "QEXPLORER_METRICS_PORT"),
        ("exploration", {"queries_per_seed": 99}, "QEXPLORER_QUERIES_PER_SEED"),
        ("kafka", {"local_controller_port": 70000}, "QEXPLORER_LOCAL_KAFKA_CONTROLLER_PORT"),
        ("extractor", {"openai_timeout_s": 0}, "QEXPLORER_OPENAI_TIMEOUT_S"),
        ("kafka", {"security_protocol": "SASL_SSL"}, "QEXPLORER_KAFKA_SASL_MECHANISM"),
    ],
)
def test_replace_refuses_an_invalid_value_naming_its_variable(part: str, values: dict,
                                                              variable: str) -> None:
    original = Settings.load()
    with pytest.raises(SettingsError) as caught:
        original.replace(**{part: values})
    assert variable in str(caught.value)
    assert original == Settings.load()  # nothing changed


def test_a_slice_changed_is_validated_too() -> None:
    metrics = MetricsSettings()
    assert metrics.changed(port=9500).port == 9500 and metrics.port == 9400
    with pytest.raises(ValidationError):
        metrics.changed(port=70000)


# --- secrets -------------------------------------------------------------------------------------


def test_secrets_are_masked_in_repr_str_and_json(clean_env: pytest.MonkeyPatch) -> None:
    settings = _secret_settings(clean_env)
    assert isinstance(settings.extractor.openai_api_key, SecretStr)
    assert isinstance(settings.kafka.sasl_password, SecretStr)
    assert settings.extractor.openai_api_key.get_secret_value() == API_KEY
    assert settings.kafka.sasl_password.get_secret_value() == SASL_PASSWORD
    assert settings.extractor.api_key_value() == API_KEY
    assert settings.kafka.sasl_password_value() == SASL_PASSWORD
    for text in (repr(settings), str(settings), f"{settings}", settings.model_dump_json(),
                 str(settings.model_dump()), repr(settings.replace(topic={"prefix": "p."})),
                 repr(settings.kafka), str(settings.kafka), settings.kafka.model_dump_json(),
                 repr(settings.extractor), str(settings.extractor),
                 settings.extractor.model_dump_json(), repr(settings.extractor.changed(seed=1))):
        assert API_KEY not in text and SASL_PASSWORD not in text
        assert MASK in text


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_kafka_clients_get_no_password_without_sasl(clean_env: pytest.MonkeyPatch,
                                                    protocol: str) -> None:
    _setenv(clean_env, QEXPLORER_KAFKA_SECURITY_PROTOCOL=protocol,
            QEXPLORER_KAFKA_SASL_PASSWORD=SASL_PASSWORD, QEXPLORER_OPENAI_API_KEY=API_KEY)
    kafka = Settings.load().kafka
    kwargs = kafka.client_kwargs()
    assert kwargs["security_protocol"] == protocol
    assert not any(key.startswith("sasl_") for key in kwargs)
    assert SASL_PASSWORD not in map(str, kwargs.values())
    assert ("ssl_context" in kwargs) is (protocol == "SSL")
    # faust's credentials: none in plain text, the TLS context alone with SSL
    faust_credentials = credentials(kafka)
    if protocol == "PLAINTEXT":
        assert faust_credentials is None
    else:
        assert isinstance(faust_credentials, faust.SSLCredentials)
        assert isinstance(faust_credentials.context, ssl.SSLContext)
        faust_kwargs = credentials_to_aiokafka_auth(faust_credentials)
        assert faust_kwargs["security_protocol"] == "SSL"
        assert not any(key.startswith("sasl_") for key in faust_kwargs)


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_kafka_clients_get_the_plain_password_only_with_sasl(clean_env: pytest.MonkeyPatch,
                                                             protocol: str) -> None:
    kafka = _secret_settings(clean_env, protocol).kafka
    kwargs = kafka.client_kwargs()
    assert kwargs["security_protocol"] == protocol
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "qx-worker"
    assert kwargs["sasl_plain_password"] == SASL_PASSWORD  # aiokafka needs the plain text
    assert API_KEY not in map(str, kwargs.values())  # the model server's key never goes there
    assert isinstance(kwargs.get("ssl_context"), ssl.SSLContext) is (protocol == "SASL_SSL")


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_faust_gets_the_same_sasl_credentials_as_aiokafka(clean_env: pytest.MonkeyPatch,
                                                          protocol: str) -> None:
    kafka = _secret_settings(clean_env, protocol).kafka
    faust_credentials = credentials(kafka)
    assert isinstance(faust_credentials, faust.SASLCredentials)
    assert SASL_PASSWORD not in repr(faust_credentials)
    faust_kwargs = credentials_to_aiokafka_auth(faust_credentials)  # what faust hands aiokafka
    ours = kafka.client_kwargs()
    for key in ("security_protocol", "sasl_mechanism", "sasl_plain_username",
                "sasl_plain_password"):
        assert faust_kwargs[key] == ours[key], key
    assert faust_kwargs["sasl_plain_password"] == SASL_PASSWORD
    assert API_KEY not in map(str, faust_kwargs.values())
    assert isinstance(faust_kwargs["ssl_context"], ssl.SSLContext) is (protocol == "SASL_SSL")


def test_the_ssl_context_trusts_the_configured_ca_file(clean_env: pytest.MonkeyPatch) -> None:
    _setenv(clean_env, QEXPLORER_KAFKA_SECURITY_PROTOCOL="SSL",
            QEXPLORER_KAFKA_SSL_CAFILE=certifi.where())
    kafka = Settings.load().kafka
    assert kafka.ssl_cafile == Path(certifi.where())
    for context in (kafka.client_kwargs()["ssl_context"], credentials(kafka).context):
        assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
        assert context.cert_store_stats()["x509_ca"] > 0


def test_the_cli_reports_a_bad_setting_without_its_secrets(clean_env: pytest.MonkeyPatch) -> None:
    # the misconfiguration that comes with a password: SASL without its mechanism
    result = CliRunner().invoke(app, ["topics", "list"], env={
        "QEXPLORER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "QEXPLORER_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        "QEXPLORER_OPENAI_API_KEY": API_KEY})
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert "invalid configuration" in output and "QEXPLORER_KAFKA_SASL_MECHANISM" in output
    assert SASL_PASSWORD not in output and API_KEY not in output


def test_a_validation_error_message_carries_no_secret(clean_env: pytest.MonkeyPatch) -> None:
    _setenv(clean_env, QEXPLORER_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
            QEXPLORER_KAFKA_SASL_PASSWORD=SASL_PASSWORD, QEXPLORER_OPENAI_API_KEY=API_KEY,
            QEXPLORER_OPENAI_TIMEOUT_S="soon")
    with pytest.raises(SettingsError) as caught:
        Settings.load()
    assert SASL_PASSWORD not in str(caught.value) and API_KEY not in str(caught.value)
    # nor does an invalid secret argument, or the raw pydantic error of a slice
    with pytest.raises(SettingsError) as caught:
        Settings.load(extractor={"openai_api_key": API_KEY, "openai_timeout_s": "soon"})
    assert API_KEY not in str(caught.value)
    with pytest.raises(ValidationError) as raw:
        KafkaSettings(security_protocol="SASL_SSL", sasl_password=SASL_PASSWORD)
    assert SASL_PASSWORD not in str(raw.value)
    with pytest.raises(ValidationError) as raw:
        ExtractorSettings(openai_api_key=API_KEY, openai_timeout_s="soon")
    assert API_KEY not in str(raw.value)


# --- model server URLs ---------------------------------------------------------------------------


def test_allowed_model_urls_drop_trailing_slashes_blanks_and_duplicates(
        clean_env: pytest.MonkeyPatch) -> None:
    _setenv(clean_env, QEXPLORER_OPENAI_BASE_URL="http://vllm:8000/v1/",
            QEXPLORER_ROLLOUT_BASE_URLS=" http://vllm-next:8000/v1// ,,http://vllm:8000/v1, ")
    extractor = Settings.load().extractor
    assert extractor.openai_base_url == "http://vllm:8000/v1"
    assert extractor.allowed_model_urls == {"http://vllm:8000/v1", "http://vllm-next:8000/v1"}


def test_allowed_model_urls_default_to_the_base_url_alone() -> None:
    assert Settings.load().extractor.allowed_model_urls == {"http://127.0.0.1:8000/v1"}


# --- sources and their precedence ----------------------------------------------------------------


def test_environment_overrides_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    defaults = Settings.load()
    _setenv(clean_env, QEXPLORER_TOPIC_PREFIX="staging.", QEXPLORER_TOPIC_PARTITIONS="12",
            QEXPLORER_EXTRACTOR="openai", QEXPLORER_EXTRACTIVE="false",
            QEXPLORER_OPENAI_TIMEOUT_S="2.5", QEXPLORER_STATE_DIR=str(tmp_path / "state"),
            QEXPLORER_WORKER_ID="w7", QEXPLORER_SEARCH_BACKEND="embedded",
            QEXPLORER_DATASETS_DIR=str(tmp_path / "datasets"))
    settings = Settings.load()
    assert (defaults.topic.partitions, settings.topic.partitions) == (4, 12)
    assert settings.topics.listings == "staging.listings"
    assert settings.topics.rollouts == "staging.model-rollouts"
    assert settings.extractor.backend == "openai" and settings.extractor.extractive is False
    assert settings.extractor.openai_timeout_s == 2.5
    assert settings.worker_dir() / "index" == tmp_path / "state" / "qexplorer-w7" / "index"
    assert (defaults.index.backend, settings.index.backend) == ("tantivy", "embedded")
    assert settings.paths.datasets_dir == tmp_path / "datasets"


def test_variable_names_are_case_insensitive(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("qexplorer_topic_prefix", "lower.")
    assert Settings.load().topic.prefix == "lower."


def test_arguments_beat_the_environment_which_beats_the_env_file(
        clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("QEXPLORER_TOPIC_PARTITIONS=6\nQEXPLORER_APP_ID=from-file\n")
    assert Settings.load().topic.partitions == 6 and Settings.load().worker.app_id == "from-file"
    clean_env.setenv("QEXPLORER_TOPIC_PARTITIONS", "8")
    assert Settings.load().topic.partitions == 8
    assert Settings.load().worker.app_id == "from-file"
    argued = Settings.load(topic={"partitions": 2})
    assert argued.topic.partitions == 2 and argued.worker.app_id == "from-file"
    assert Settings.load().topic.partitions == 8  # the argument was for that load only


def test_kafka_bootstrap_is_an_alias(clean_env: pytest.MonkeyPatch) -> None:
    local = Settings.load().kafka
    assert local.uses_local_broker and local.bootstrap is None
    assert local.servers == local.local_address == "127.0.0.1:9092"
    assert local.client_kwargs()["bootstrap_servers"] == "127.0.0.1:9092"
    clean_env.setenv("KAFKA_BOOTSTRAP", "broker-1:9092,broker-2:9092")
    kafka = Settings.load().kafka
    assert kafka.bootstrap == kafka.servers == "broker-1:9092,broker-2:9092"
    assert not kafka.uses_local_broker
    assert kafka.client_kwargs()["bootstrap_servers"] == "broker-1:9092,broker-2:9092"
    assert env_name(KafkaSettings, "bootstrap") == "KAFKA_BOOTSTRAP"


def test_the_prefixed_bootstrap_name_and_the_field_name_work_too(
        clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("QEXPLORER_KAFKA_BOOTSTRAP", "prefixed:9092")
    assert Settings.load().kafka.bootstrap == "prefixed:9092"
    clean_env.setenv("KAFKA_BOOTSTRAP", "conventional:9092")
    assert Settings.load().kafka.bootstrap == "conventional:9092"  # the conventional name wins
    argued = Settings.load(kafka={"bootstrap": "argument:9092"})
    assert argued.kafka.bootstrap == "argument:9092"
    assert Settings.load(kafka={"bootstrap": None}).kafka.uses_local_broker
    assert Settings.load().replace(kafka={"bootstrap": "replaced:9092"}).kafka.servers == (
        "replaced:9092")


def test_secret_arguments_are_wrapped_too() -> None:
    settings = Settings.load(extractor={"openai_api_key": API_KEY},
                             kafka={"sasl_password": SASL_PASSWORD})
    assert isinstance(settings.extractor.openai_api_key, SecretStr)
    assert isinstance(settings.kafka.sasl_password, SecretStr)
    replaced = Settings.load().replace(extractor={"openai_api_key": API_KEY})
    assert isinstance(replaced.extractor.openai_api_key, SecretStr)
    for text in (repr(settings), repr(replaced)):
        assert API_KEY not in text and SASL_PASSWORD not in text


# --- a child process's environment ---------------------------------------------------------------


def test_to_env_gives_a_child_the_same_settings(clean_env: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    _setenv(clean_env, QEXPLORER_KAFKA_SSL_CAFILE=certifi.where(),
            QEXPLORER_TOPIC_RETENTION_MS='{"detections": 604800000}',
            QEXPLORER_EXTRACTIVE="false", QEXPLORER_TEMPERATURE="0.7",
            QEXPLORER_BLEND='{"probe": 64, "contrast": 2}')
    parent = _secret_settings(clean_env).replace(
        topic={"prefix": "qa.", "partitions": 3},
        worker={"worker_id": "w2", "log_format": "json"},
        paths={"cache_dir": tmp_path / "cache", "state_dir": tmp_path / "state"},
        index={"commit_interval_s": 0.25},
        exploration={"queries_per_seed": 7},
        serving={"device": "cpu", "max_model_len": 2048},
        metrics={"enabled": False, "port": 0},
        kafka={"bootstrap": "broker:9092"})
    env = parent.to_env()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    assert env["QEXPLORER_KAFKA_SASL_PASSWORD"] == SASL_PASSWORD  # secrets in clear, for the child
    assert env["QEXPLORER_OPENAI_API_KEY"] == API_KEY
    assert env["KAFKA_BOOTSTRAP"] == "broker:9092"
    # the child's environment is exactly that (nothing inherited from this process)
    for name in list(os.environ):
        if name.upper().startswith("QEXPLORER_"):
            clean_env.delenv(name)
    for name, value in env.items():
        clean_env.setenv(name, value)
    child = Settings.load()
    for name, _ in slices():
        assert getattr(child, name) == getattr(parent, name), name
    assert child == parent
    assert child.kafka.sasl_password_value() == SASL_PASSWORD
    assert child.extractor.api_key_value() == API_KEY
    assert child.topics.config(DETECTIONS)["retention.ms"] == "604800000"
    assert child.extractor.blend == {"probe": 64.0, "contrast": 2.0}
    assert child.worker_dir() == parent.worker_dir() == tmp_path / "state" / "qexplorer-w2"


def test_to_env_of_the_defaults_sets_nothing_new() -> None:
    assert Settings.load().to_env() == {}


# --- every variable ------------------------------------------------------------------------------


def test_environment_variables_list_every_field_of_every_slice_once() -> None:
    rows = environment_variables()
    listed = [(row["slice"], row["field"]) for row in rows]
    expected = [(name, field) for name, part in slices() for field in part.model_fields]
    assert sorted(listed) == sorted(expected)
    assert len(listed) == len(set(listed))
    assert {name for name, _ in slices()} == set(Settings.model_fields)
    variables = [row["variable"] for row in rows]
    assert len(variables) == len(set(variables)), "two settings on one variable"
    for row in rows:
        part = dict(slices())[row["slice"]]
        assert row["variable"] == env_name(part, row["field"])
        assert row["variable"] == "KAFKA_BOOTSTRAP" or row["variable"].startswith("QEXPLORER_")
        assert set(row) == {"variable", "slice", "field", "default", "description"}
    for name in ("KAFKA_BOOTSTRAP", "QEXPLORER_INDEX_COMMIT_DOCS", "QEXPLORER_EXTRACTOR",
                 "QEXPLORER_SEARCH_THREADS", "QEXPLORER_LOCAL_KAFKA_PORT",
                 "QEXPLORER_TOPIC_RETENTION_MS", "QEXPLORER_SEARCH_BACKEND",
                 "QEXPLORER_DATASETS_DIR", "QEXPLORER_METRICS_PORT", "QEXPLORER_SERVE_PORT",
                 "QEXPLORER_OPENAI_API_KEY", "QEXPLORER_KAFKA_SASL_PASSWORD"):
        assert name in variables, name


def test_every_listed_variable_sets_its_field(clean_env: pytest.MonkeyPatch) -> None:
    defaults = Settings.load()
    for row in environment_variables():
        # the default as the environment writes it; "128" suits every field without a default
        value = row["default"] or ("PLAIN" if row["field"] == "sasl_mechanism" else "128")
        clean_env.setenv(row["variable"], value)
        settings = Settings.load()
        part = getattr(settings, row["slice"])
        assert row["field"] in part.model_fields_set, row["variable"]
        assert settings.to_env() == {row["variable"]: value}, row["variable"]
        if row["default"]:
            assert getattr(part, row["field"]) == getattr(getattr(defaults, row["slice"]),
                                                          row["field"]), row["variable"]
        clean_env.delenv(row["variable"])


# --- topics --------------------------------------------------------------------------------------


def test_topics_apply_prefix_partitions_replication_and_retention(
        clean_env: pytest.MonkeyPatch) -> None:
    defaults = Settings.load().topics
    assert defaults.config(DETECTIONS) == {"cleanup.policy": "delete",
                                           "retention.ms": str(30 * 24 * 3600 * 1000)}
    assert defaults.config(TOXIC_ITEMS)["retention.ms"] == "-1"
    _setenv(clean_env, QEXPLORER_TOPIC_PREFIX="staging.", QEXPLORER_TOPIC_PARTITIONS="12",
            QEXPLORER_TOPIC_REPLICATION="3",
            QEXPLORER_TOPIC_RETENTION_MS='{"detections": 604800000, "dead-letter": 86400000}')
    topics = Settings.load().topics
    assert topics.all() == [f"staging.{spec.name}" for spec in REGISTRY]
    assert (topics.listings, topics.toxic_items, topics.detections, topics.feedback,
            topics.dead_letter, topics.rollouts) == (
        "staging.listings", "staging.toxic-items", "staging.detections",
        "staging.search-feedback", "staging.dead-letter", "staging.model-rollouts")
    assert topics.partitions(LISTINGS) == topics.partitions(DETECTIONS) == 12
    assert topics.partitions(DEAD_LETTER) == topics.partitions(MODEL_ROLLOUTS) == 1
    assert topics.replication == 3
    assert topics.config(DETECTIONS) == {"cleanup.policy": "delete", "retention.ms": "604800000"}
    assert topics.config(DEAD_LETTER)["retention.ms"] == "86400000"
    assert topics.config(SEARCH_FEEDBACK)["retention.ms"] == "-1"  # not overridden
    assert topics.config(LISTINGS) == topics.config(MODEL_ROLLOUTS) == {
        "cleanup.policy": "compact"}
    assert topics.spec("staging.detections") is topics.spec("detections") is DETECTIONS


@pytest.mark.parametrize(
    ("retention", "refusal"),
    [
        ('{"feedback": 1000}', "unknown topic 'feedback'"),
        ('{"staging.detections": 1000}', "unknown topic 'staging.detections'"),
        ('{"listings": 1000}', "listings is compacted"),
        ('{"model-rollouts": 1000}', "model-rollouts is compacted"),
    ],
)
def test_topics_refuse_a_retention_they_cannot_apply(clean_env: pytest.MonkeyPatch,
                                                     retention: str, refusal: str) -> None:
    _setenv(clean_env, QEXPLORER_TOPIC_PREFIX="staging.", QEXPLORER_TOPIC_RETENTION_MS=retention)
    with pytest.raises(SettingsError, match=re.escape(refusal)) as caught:
        Settings.load()
    assert _named(caught.value) == {"QEXPLORER_TOPIC_RETENTION_MS"}
    clean_env.delenv("QEXPLORER_TOPIC_RETENTION_MS")
    with pytest.raises(SettingsError, match=re.escape(refusal)):
        Settings.load().replace(topic={"retention_ms": json.loads(retention)})
    with pytest.raises(ValueError, match=re.escape(refusal)):  # nor do the topics themselves
        Topics("staging.", retention_ms=json.loads(retention))


# --- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"QEXPLORER_TOPIC_PARTITIONS": "-1"}, "QEXPLORER_TOPIC_PARTITIONS"),
        ({"QEXPLORER_OPENAI_TIMEOUT_S": "thirty"}, "QEXPLORER_OPENAI_TIMEOUT_S"),
        ({"QEXPLORER_METRICS_PORT": "ninety"}, "QEXPLORER_METRICS_PORT"),
        ({"QEXPLORER_EXTRACTOR": "bert"}, "QEXPLORER_EXTRACTOR"),
        ({"QEXPLORER_EXTRACTOR": "transformers"}, "QEXPLORER_MODEL"),
        ({"QEXPLORER_TOPIC_RETENTION_MS": "7 days"}, "QEXPLORER_TOPIC_RETENTION_MS"),
        ({"QEXPLORER_TOPIC_RETENTION_MS": '{"feedback": 1000}'}, "QEXPLORER_TOPIC_RETENTION_MS"),
        ({"QEXPLORER_TOPIC_RETENTION_MS": '{"listings": 1000}'}, "QEXPLORER_TOPIC_RETENTION_MS"),
    ],
)
def test_the_cli_stops_with_exit_2_naming_the_setting(env: dict[str, str], named: str) -> None:
    result = CliRunner().invoke(app, ["topics", "list"], env=env)
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert output.startswith("invalid configuration:") and named in output


def test_the_cli_reads_the_environment() -> None:
    result = CliRunner().invoke(app, ["topics", "list"], env={
        "QEXPLORER_TOPIC_PREFIX": "qa.", "QEXPLORER_TOPIC_PARTITIONS": "3"})
    assert result.exit_code == 0, result.output
    # one line a topic (the description may wrap onto the next lines)
    rows = {line.split()[0]: line.split()[1:3] for line in result.output.splitlines()
            if line.startswith("qa.")}
    assert rows["qa.listings"] == ["3", "partitions"]
    assert rows["qa.dead-letter"] == ["1", "partitions"]
    assert list(rows) == Settings.load(topic={"prefix": "qa."}).topics.all()


def test_the_settings_command_lists_every_variable_with_secrets_masked() -> None:
    result = CliRunner().invoke(app, ["settings"], env={
        "QEXPLORER_TOPIC_PREFIX": "qa.", "QEXPLORER_OPENAI_API_KEY": API_KEY,
        "QEXPLORER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "QEXPLORER_KAFKA_SASL_MECHANISM": "PLAIN",
        "QEXPLORER_KAFKA_SASL_PASSWORD": SASL_PASSWORD})
    assert result.exit_code == 0, result.output
    assert API_KEY not in result.output and SASL_PASSWORD not in result.output
    shown = {}
    for line in result.output.splitlines():
        variable, _, rest = line.partition("=")
        shown[variable] = rest.split("#", 1)[0].strip()
    assert set(shown) == {row["variable"] for row in environment_variables()}
    assert shown["QEXPLORER_TOPIC_PREFIX"] == "qa."
    assert shown["QEXPLORER_OPENAI_API_KEY"] == shown["QEXPLORER_KAFKA_SASL_PASSWORD"] == MASK
    assert shown["QEXPLORER_TOPIC_PARTITIONS"] == "4"
