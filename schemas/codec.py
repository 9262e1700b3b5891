"""Bytes on the wire <-> validated records: orjson out, strict validation in.

``decode`` is the only way a message enters the system. It raises ``SchemaError`` with a short,
readable reason (never a traceback dump) that the dead-letter record carries.
"""

from __future__ import annotations

import base64
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.models import DeadLetter, utcnow
from schemas.topics import REGISTRY

T = TypeVar("T")

#: The contract of each topic, by the topic's logical name (from the registry).
CONTRACTS: dict[str, Any] = {spec.name: spec.contract for spec in REGISTRY}
SUPPORTED_VERSIONS = {1}
MAX_MESSAGE_BYTES = 256 * 1024
#: A dead letter keeps a message of up to MAX_MESSAGE_BYTES whole (base64: 4/3 of it) plus a
#: bounded key, error and provenance, so its own contract allows more.
MAX_DEAD_LETTER_BYTES = 2 * MAX_MESSAGE_BYTES
#: A dead letter keeps at most this much of a message's key (valid keys are ids, far shorter).
MAX_DEAD_LETTER_KEY_BYTES = 1024
#: Bound on a dead letter's error text (the DeadLetter model's own limit).
_MAX_ERROR_CHARS = 2_000

_ADAPTERS: dict[int, TypeAdapter] = {}
_CONTRACTS_SEEN: list[Any] = []


class SchemaError(ValueError):
    """A message that does not satisfy its topic's contract."""


def _adapter(contract: Any) -> TypeAdapter:
    # keyed by identity: hashing an Annotated union walks its arguments on every message
    adapter = _ADAPTERS.get(id(contract))
    if adapter is None:
        adapter = _ADAPTERS[id(contract)] = TypeAdapter(contract)
        _CONTRACTS_SEEN.append(contract)  # keeps the id from being reused
    return adapter


def _clip(text: str, limit: int) -> str:
    """``text`` as one readable line: non-printable characters (newlines, controls) escaped,
    at most ``limit`` characters. Reasons echo field names and values from the message."""
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        # a wrong tag of a tagged union is reported at the root: name its discriminator field
        tag_field = str((err.get("ctx") or {}).get("discriminator", "")).strip("'") or "<root>"
        loc = ".".join(str(p) for p in err.get("loc", ())) or tag_field
        parts.append(f"{_clip(loc, 80)}: {_clip(str(err.get('msg')), 200)}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; (+{more} more)" if more > 0 else "")


def decode(contract: type[T] | Any, raw: bytes | None) -> T:
    """Validate raw message bytes against a contract, or raise SchemaError saying why."""
    if raw is None:
        raise SchemaError("empty message (null value)")
    limit = MAX_DEAD_LETTER_BYTES if contract is DeadLetter else MAX_MESSAGE_BYTES
    if len(raw) > limit:
        raise SchemaError(f"message of {len(raw)} bytes exceeds {limit}")
    # Fast path, taken by every valid message: pydantic parses and validates the JSON in one
    # pass (a worker's profile: 6.6 us a listing instead of 8.7). Whatever it refuses, or a
    # record whose version was only defaulted, goes the path below, which decides and says
    # why in its own words.
    try:
        record = _adapter(contract).validate_json(raw)
    except ValidationError:
        pass
    else:
        if "schema_version" in record.model_fields_set:
            return record
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"not valid JSON/UTF-8: {_clip(str(exc), 200)}") from None
    if not isinstance(data, dict):
        raise SchemaError(f"expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    # type first: a list is unhashable (TypeError), and true == 1.0 == 1 would pass as 1
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise SchemaError(
            f"unsupported schema_version {_clip(repr(version), 60)} "
            f"(supported: {sorted(SUPPORTED_VERSIONS)})"
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
    """The dead-letter record for a message that failed at ``stage``.

    The raw value is kept whole up to MAX_MESSAGE_BYTES (so it can be replayed). A longer one
    can never be decoded (its size alone is refused), so only its first MAX_MESSAGE_BYTES are
    kept, and the key is cut to MAX_DEAD_LETTER_KEY_BYTES; the error says so. This keeps every
    dead letter within its own contract (MAX_DEAD_LETTER_BYTES) and the broker's size limit.
    """
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}"
    cuts = []
    if value is not None and len(value) > MAX_MESSAGE_BYTES:
        cuts.append(f"value cut to its first {MAX_MESSAGE_BYTES} of {len(value)} bytes")
        value = value[:MAX_MESSAGE_BYTES]
    if key is not None and len(key) > MAX_DEAD_LETTER_KEY_BYTES:
        cuts.append(f"key cut to its first {MAX_DEAD_LETTER_KEY_BYTES} of {len(key)} bytes")
        key = key[:MAX_DEAD_LETTER_KEY_BYTES]
    note = f" [raw {'; '.join(cuts)}]" if cuts else ""
    return DeadLetter(
        stage=stage[:200],
        error=str(error)[: _MAX_ERROR_CHARS - len(note)] + note,
        topic=topic[:200],
        partition=partition,
        offset=offset,
        raw_key_b64=base64.b64encode(key).decode() if key is not None else None,
        raw_value_b64=base64.b64encode(value or b"").decode(),
        failed_at=utcnow(),
    )

