"""The one settings object, as the environment fills it: validation at start with errors that
name the setting, secrets that stay masked, URL normalisation, precedence of the sources
(arguments > environment > .env > defaults), the ``KAFKA_BOOTSTRAP`` alias, and how the
``qexplorer`` command reports a bad value. (The local broker's use of the settings is in
test_broker_config.py.)"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import certifi
import pytest
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

from cli.main import app
from streams.settings import ExtractorBackend, SecurityProtocol, Settings, get_settings

API_KEY = "sk-test-3f9a1c"
SASL_PASSWORD = "pw-test-77d2e0"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Every test starts from the defaults: no QExplorer variable from the caller, and a
    working directory without a .env file."""
    for name in list(os.environ):
        if name.upper().startswith("QEXPLORER_") or name.upper() == "KAFKA_BOOTSTRAP":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _setenv(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """Set environment variables given as keyword arguments (names as written)."""
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def _error_fields(exc: ValidationError) -> set[str]:
    """The field names a validation error points at."""
    return {str(loc) for error in exc.errors() for loc in error["loc"]}


def _secret_settings(monkeypatch: pytest.MonkeyPatch, protocol: str = "SASL_SSL") -> Settings:
    """Settings with both secrets set through the environment."""
    _setenv(monkeypatch, QEXPLORER_OPENAI_API_KEY=API_KEY,
            QEXPLORER_KAFKA_SECURITY_PROTOCOL=protocol,
            QEXPLORER_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
            QEXPLORER_KAFKA_SASL_USERNAME="qx-worker",
            QEXPLORER_KAFKA_SASL_PASSWORD=SASL_PASSWORD)
    return Settings()


# --- invalid values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("QEXPLORER_TOPIC_PARTITIONS", "-1", "topic_partitions"),
        ("QEXPLORER_TOPIC_PARTITIONS", "0", "topic_partitions"),
        ("QEXPLORER_TOPIC_PARTITIONS", "four", "topic_partitions"),
        ("QEXPLORER_TOPIC_REPLICATION", "0", "topic_replication"),
        ("QEXPLORER_SERVE_PORT", "70000", "serve_port"),
        ("QEXPLORER_SERVE_PORT", "0", "serve_port"),
        ("QEXPLORER_EXTRACTOR", "bert", "extractor"),
        ("QEXPLORER_SERVE_DEVICE", "tpu", "serve_device"),
        ("QEXPLORER_KAFKA_SECURITY_PROTOCOL", "TLS", "kafka_security_protocol"),
        ("QEXPLORER_OPENAI_TIMEOUT_S", "thirty", "openai_timeout_s"),
        ("QEXPLORER_OPENAI_TIMEOUT_S", "0", "openai_timeout_s"),
        ("QEXPLORER_SERVE_READY_TIMEOUT_S", "5m", "serve_ready_timeout_s"),
        ("QEXPLORER_INDEX_COMMIT_INTERVAL_S", "half a second", "index_commit_interval_s"),
        ("QEXPLORER_EXPLORE_WAIT_INDEX_S", "-1", "explore_wait_index_s"),
        ("QEXPLORER_QUERIES_PER_SEED", "17", "queries_per_seed"),
        ("QEXPLORER_RESULTS_PER_QUERY", "0", "results_per_query"),
        ("QEXPLORER_OPENAI_CONCURRENCY", "0", "openai_concurrency"),
        ("QEXPLORER_EXTRACTIVE", "perhaps", "extractive"),
        ("QEXPLORER_SERVE_MAX_MODEL_LEN", "8", "serve_max_model_len"),
    ],
)
def test_an_invalid_value_is_refused_naming_its_field(clean_env: pytest.MonkeyPatch,
                                                      variable: str, value: str,
                                                      field: str) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert _error_fields(caught.value) == {field}
    assert field in str(caught.value)


@pytest.mark.parametrize("variable", ["QEXPLORER_LOCAL_KAFKA_PORT",
                                      "QEXPLORER_LOCAL_KAFKA_CONTROLLER_PORT"])
def test_local_broker_ports_out_of_range_are_refused(clean_env: pytest.MonkeyPatch,
                                                     variable: str) -> None:
    clean_env.setenv(variable, "70000")
    with pytest.raises(ValidationError):
        Settings()


def test_every_invalid_value_is_reported_at_once(clean_env: pytest.MonkeyPatch) -> None:
    _setenv(clean_env, QEXPLORER_TOPIC_PARTITIONS="-1", QEXPLORER_SERVE_PORT="99999",
            QEXPLORER_OPENAI_TIMEOUT_S="soon")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert _error_fields(caught.value) == {"topic_partitions", "serve_port", "openai_timeout_s"}


def test_the_transformers_extractor_needs_a_model(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("QEXPLORER_EXTRACTOR", "transformers")
    with pytest.raises(ValidationError, match="QEXPLORER_MODEL") as caught:
        Settings()
    assert "extractor=transformers" in str(caught.value)
    clean_env.setenv("QEXPLORER_MODEL", "/models/dpo")
    assert Settings().extractor is ExtractorBackend.TRANSFORMERS


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_a_sasl_protocol_needs_a_mechanism(clean_env: pytest.MonkeyPatch, protocol: str) -> None:
    clean_env.setenv("QEXPLORER_KAFKA_SECURITY_PROTOCOL", protocol)
    with pytest.raises(ValidationError, match="QEXPLORER_KAFKA_SASL_MECHANISM") as caught:
        Settings()
    assert f"kafka_security_protocol={protocol}" in str(caught.value)
    clean_env.setenv("QEXPLORER_KAFKA_SASL_MECHANISM", "PLAIN")
    assert Settings().kafka_security_protocol is SecurityProtocol(protocol)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.topic_partitions = 8  # type: ignore[misc]


# --- secrets -------------------------------------------------------------------------------------


def test_secrets_are_masked_in_repr_str_and_json(clean_env: pytest.MonkeyPatch) -> None:
    settings = _secret_settings(clean_env)
    assert settings.openai_api_key.get_secret_value() == API_KEY
    assert settings.kafka_sasl_password.get_secret_value() == SASL_PASSWORD
    for text in (repr(settings), str(settings), f"{settings}", settings.model_dump_json(),
                 str(settings.model_dump()), repr(settings.model_copy())):
        assert API_KEY not in text and SASL_PASSWORD not in text
        assert "**********" in text


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_kafka_clients_get_no_password_without_sasl(clean_env: pytest.MonkeyPatch,
                                                    protocol: str) -> None:
    _setenv(clean_env, QEXPLORER_KAFKA_SECURITY_PROTOCOL=protocol,
            QEXPLORER_KAFKA_SASL_PASSWORD=SASL_PASSWORD, QEXPLORER_OPENAI_API_KEY=API_KEY)
    kwargs = Settings().kafka_client_kwargs()
    assert kwargs["security_protocol"] == protocol
    assert not any(key.startswith("sasl_") for key in kwargs)
    assert SASL_PASSWORD not in map(str, kwargs.values())
    assert ("ssl_context" in kwargs) is (protocol == "SSL")


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_kafka_clients_get_the_plain_password_only_with_sasl(clean_env: pytest.MonkeyPatch,
                                                             protocol: str) -> None:
    kwargs = _secret_settings(clean_env, protocol).kafka_client_kwargs()
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "qx-worker"
    assert kwargs["sasl_plain_password"] == SASL_PASSWORD  # aiokafka needs the plain text
    assert API_KEY not in map(str, kwargs.values())  # the model server's key never goes there
    assert isinstance(kwargs.get("ssl_context"), ssl.SSLContext) is (protocol == "SASL_SSL")


def test_the_ssl_context_trusts_the_configured_ca_file(clean_env: pytest.MonkeyPatch) -> None:
    _setenv(clean_env, QEXPLORER_KAFKA_SECURITY_PROTOCOL="SSL",
            QEXPLORER_KAFKA_SSL_CAFILE=certifi.where())
    settings = Settings()
    assert settings.kafka_ssl_cafile == Path(certifi.where())
    context = settings.kafka_client_kwargs()["ssl_context"]
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
            QEXPLORER_KAFKA_SASL_PASSWORD=SASL_PASSWORD)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert SASL_PASSWORD not in str(caught.value)


# --- model server URLs ---------------------------------------------------------------------------


def test_allowed_model_urls_drop_trailing_slashes_blanks_and_duplicates(
        clean_env: pytest.MonkeyPatch) -> None:
    _setenv(clean_env, QEXPLORER_OPENAI_BASE_URL="http://vllm:8000/v1/",
            QEXPLORER_ROLLOUT_BASE_URLS=" http://vllm-next:8000/v1// ,,http://vllm:8000/v1, ")
    assert Settings().allowed_model_urls == {"http://vllm:8000/v1", "http://vllm-next:8000/v1"}


def test_allowed_model_urls_default_to_the_base_url_alone() -> None:
    assert Settings().allowed_model_urls == {"http://127.0.0.1:8000/v1"}


# --- sources and their precedence ----------------------------------------------------------------


def test_environment_overrides_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    defaults = Settings()
    _setenv(clean_env, QEXPLORER_TOPIC_PREFIX="staging.", QEXPLORER_TOPIC_PARTITIONS="12",
            QEXPLORER_EXTRACTOR="openai", QEXPLORER_EXTRACTIVE="false",
            QEXPLORER_OPENAI_TIMEOUT_S="2.5", QEXPLORER_STATE_DIR=str(tmp_path / "state"),
            QEXPLORER_WORKER_ID="w7")
    settings = Settings()
    assert (defaults.topic_partitions, settings.topic_partitions) == (4, 12)
    assert settings.topics.listings == "staging.listings"
    assert settings.topics.rollouts == "staging.model-rollouts"
    assert settings.extractor is ExtractorBackend.OPENAI and settings.extractive is False
    assert settings.openai_timeout_s == 2.5
    assert settings.index_dir == tmp_path / "state" / "qexplorer-w7" / "index"


def test_variable_names_are_case_insensitive(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("qexplorer_topic_prefix", "lower.")
    assert Settings().topic_prefix == "lower."


def test_arguments_beat_the_environment_which_beats_the_env_file(
        clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("QEXPLORER_TOPIC_PARTITIONS=6\nQEXPLORER_APP_ID=from-file\n")
    assert Settings().topic_partitions == 6 and Settings().app_id == "from-file"
    clean_env.setenv("QEXPLORER_TOPIC_PARTITIONS", "8")
    assert Settings().topic_partitions == 8 and Settings().app_id == "from-file"
    assert get_settings(topic_partitions=2).topic_partitions == 2


def test_kafka_bootstrap_is_an_alias(clean_env: pytest.MonkeyPatch) -> None:
    local = Settings()
    assert local.uses_local_broker and local.bootstrap == "127.0.0.1:9092"
    clean_env.setenv("KAFKA_BOOTSTRAP", "broker-1:9092,broker-2:9092")
    settings = Settings()
    assert settings.kafka_bootstrap == "broker-1:9092,broker-2:9092"
    assert not settings.uses_local_broker
    assert settings.kafka_client_kwargs()["bootstrap_servers"] == "broker-1:9092,broker-2:9092"


def test_the_prefixed_bootstrap_name_and_the_field_name_work_too(
        clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("QEXPLORER_KAFKA_BOOTSTRAP", "prefixed:9092")
    assert Settings().bootstrap == "prefixed:9092"
    clean_env.setenv("KAFKA_BOOTSTRAP", "conventional:9092")
    assert Settings().bootstrap == "conventional:9092"  # the conventional name wins
    assert Settings(kafka_bootstrap="argument:9092").bootstrap == "argument:9092"


def test_secret_arguments_are_wrapped_too() -> None:
    settings = Settings(openai_api_key=API_KEY)
    assert isinstance(settings.openai_api_key, SecretStr)
    assert API_KEY not in repr(settings)


# --- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"QEXPLORER_TOPIC_PARTITIONS": "-1"}, "topic_partitions"),
        ({"QEXPLORER_OPENAI_TIMEOUT_S": "thirty"}, "openai_timeout_s"),
        ({"QEXPLORER_EXTRACTOR": "bert"}, "extractor"),
        ({"QEXPLORER_EXTRACTOR": "transformers"}, "QEXPLORER_MODEL"),
    ],
)
def test_the_cli_stops_with_exit_2_naming_the_setting(env: dict[str, str], named: str) -> None:
    result = CliRunner().invoke(app, ["topics", "list"], env=env)
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert output.startswith("invalid configuration:") and named in output


def test_the_cli_reads_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["topics", "list"], env={
        "QEXPLORER_TOPIC_PREFIX": "qa.", "QEXPLORER_TOPIC_PARTITIONS": "3"})
    assert result.exit_code == 0, result.output
    lines = dict(line.split(maxsplit=1) for line in result.output.splitlines())
    assert lines["qa.listings"] == "3 partitions"
    assert set(lines) == set(Settings(topic_prefix="qa.").topics.all())
