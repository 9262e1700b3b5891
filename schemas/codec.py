"""Bytes on the wire <-> validated records: orjson out, strict validation in.

``decode`` is the only way a message enters the system. It raises ``SchemaError`` with a short,
readable reason (never a traceback dump) that the dead-letter record carries.
"""

from __future__ import annotations

import base64
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.models import (
    DeadLetter,
    Detection,
    ListingEvent,
    ModelRollout,
    SearchFeedback,
    ToxicItem,
    utcnow,
)

T = TypeVar("T")

#: The contract of each logical topic, by the topic's logical name.
CONTRACTS: dict[str, Any] = {
    "listings": ListingEvent,
    "toxic-items": ToxicItem,
    "detections": Detection,
    "search-feedback": SearchFeedback,
    "dead-letter": DeadLetter,
    "model-rollouts": ModelRollout,
}
SUPPORTED_VERSIONS = {1}
MAX_MESSAGE_BYTES = 256 * 1024

_ADAPTERS: dict[Any, TypeAdapter] = {}


class SchemaError(ValueError):
    """A message that does not satisfy its topic's contract."""


def _adapter(contract: Any) -> TypeAdapter:
    adapter = _ADAPTERS.get(contract)
    if adapter is None:
        adapter = _ADAPTERS[contract] = TypeAdapter(contract)
    return adapter


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "<root>"
        parts.append(f"{loc}: {err.get('msg')}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; (+{more} more)" if more > 0 else "")


def decode(contract: type[T] | Any, raw: bytes | None) -> T:
    """Validate raw message bytes against a contract, or raise SchemaError saying why."""
    if raw is None:
        raise SchemaError("empty message (null value)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise SchemaError(f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"not valid JSON/UTF-8: {exc}") from None
    if not isinstance(data, dict):
        raise SchemaError(f"expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if version not in SUPPORTED_VERSIONS:
        raise SchemaError(
            f"unsupported schema_version {version!r} (supported: {sorted(SUPPORTED_VERSIONS)})"
        )
    try:
        return _adapter(contract).validate_python(data)
    except ValidationError as exc:
        raise SchemaError(_summarise(exc)) from None


def encode(record: BaseModel) -> bytes:
    """Serialise a record to JSON bytes with orjson."""
    return orjson.dumps(record.model_dump(mode="json"))


def dead_letter(
    *,
    stage: str,
    error: str | BaseException,
    topic: str,
    value: bytes | None,
    key: bytes | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> DeadLetter:
    """The dead-letter record for a message that failed at ``stage``."""
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}"
    return DeadLetter(
        stage=stage[:200],
        error=str(error)[:2_000],
        topic=topic[:200],
        partition=partition,
        offset=offset,
        raw_key_b64=base64.b64encode(key).decode() if key is not None else None,
        raw_value_b64=base64.b64encode(value or b"").decode(),
        failed_at=utcnow(),
    )


def key_bytes(key: str) -> bytes:
    """Message keys are UTF-8 strings."""
    return key.encode("utf-8")
