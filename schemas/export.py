"""Export each topic's contract as a JSON Schema file, for consumers in other languages."""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import TypeAdapter

from schemas.codec import CONTRACTS

JSON_DIR = Path(__file__).resolve().parent / "json"


#: Fields the codec requires on the wire although the models default them when building a
#: record in Python: a message must say which version and which operation it is.
WIRE_REQUIRED = ("schema_version", "op")


def _require_wire_fields(schema: dict) -> None:
    for model in [schema, *schema.get("$defs", {}).values()]:
        props = model.get("properties", {})
        required = model.setdefault("required", []) if props else []
        for field in WIRE_REQUIRED:
            if field in props and field not in required:
                required.insert(0, field)


def json_schemas() -> dict[str, dict]:
    """File name -> JSON Schema of each topic contract (version 1)."""
    out = {}
    for topic, contract in CONTRACTS.items():
        schema = TypeAdapter(contract).json_schema(mode="validation")
        _require_wire_fields(schema)
        schema["$id"] = f"https://qexplorer.example/schemas/{topic}.v1.schema.json"
        schema["title"] = schema.get("title") or topic
        schema["x-topic"] = topic
        out[f"{topic}.v1.schema.json"] = schema
    return out


def export_json_schemas(directory: Path = JSON_DIR) -> list[Path]:
    """Write the JSON Schema files; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / name
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
                         + b"\n")
        written.append(path)
    return written
