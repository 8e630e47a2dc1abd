"""Values that satisfy a JSON schema: tool-call arguments and structured outputs.

What a caller's validator checks is honoured (required properties, types, enums, consts,
bounds, lengths, formats, $ref); property names pick realistic strings ("location" gets a
city), so a demo's tool call reads like one a model would make.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from gateway.sim import text

_MAX_DEPTH = 6
_HINTS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("city", "location", "place", "address"), ("Paris, France", "Boston, MA", "Tokyo, Japan", "Lisbon, Portugal")),
    (("country",), ("France", "Japan", "Brazil", "Canada")),
    (("email",), ("ada@example.com", "grace@example.org", "alan@example.net")),
    (("url", "link", "website", "uri"), ("https://example.com/docs", "https://example.org/report")),
    (("name", "author", "person", "user"), ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Katherine Johnson")),
    (("language", "lang"), ("English", "French", "Japanese")),
    (("unit",), ("celsius", "fahrenheit")),
    (("date", "day"), ("2024-05-17", "2024-11-02", "2025-01-30")),
    (("currency",), ("USD", "EUR", "JPY")),
    (("color", "colour"), ("blue", "green", "amber")),
    (("query", "search", "question", "prompt", "keyword", "topic"), ("latest quarterly results", "weather forecast")),
)  # fmt: skip
_PROSE_NAMES = (
    "description",
    "summary",
    "text",
    "answer",
    "reason",
    "explanation",
    "content",
    "message",
    "body",
)
_FORMATS = {
    "date-time": "2024-05-17T09:30:00Z",
    "date": "2024-05-17",
    "time": "09:30:00",
    "email": "ada@example.com",
    "uri": "https://example.com/docs",
    "url": "https://example.com/docs",
    "uuid": "3f0e2a4c-9b1d-4e57-8c2a-6d5f1b7e9a10",
    "ipv4": "192.0.2.10",
    "hostname": "api.example.com",
}


def value_for(schema: Any, rng: random.Random, name: str = "", root: Any = None, depth: int = 0) -> Any:
    """One value valid against `schema`; `root` resolves `$ref`s, `name` hints the content."""
    if not isinstance(schema, Mapping):
        return text.phrase(rng)
    root = schema if root is None else root
    if "$ref" in schema and depth < _MAX_DEPTH:
        return value_for(_resolve(schema["$ref"], root), rng, name, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            concrete = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            return value_for((concrete or options)[0], rng, name, root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = _resolve(part["$ref"], root) if isinstance(part, Mapping) and "$ref" in part else part
            if isinstance(part, Mapping):
                merged = _merge(merged, part)
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return value_for(_merge(merged, rest), rng, name, root, depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        return _object(schema, rng, root, depth)
    if kind == "array":
        return _array(schema, rng, name, root, depth)
    if kind == "integer":
        return _integer(schema, rng, name)
    if kind == "number":
        return _number(schema, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, rng, name)


def _type_of(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        concrete = [k for k in kind if k != "null"]
        kind = concrete[0] if concrete else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _resolve(ref: Any, root: Any) -> Any:
    """Local references only (`#/$defs/X`, `#/definitions/X`), as the APIs accept."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return {}
    node = root
    for part in ref.lstrip("#/").split("/"):
        if not part:
            continue
        if not isinstance(node, Mapping) or part not in node:
            return {}
        node = node[part]
    return node


def _merge(left: Mapping[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(left)
    for key, value in right.items():
        if key == "properties" and isinstance(merged.get(key), Mapping) and isinstance(value, Mapping):
            merged[key] = {**merged[key], **value}
        elif key == "required" and isinstance(merged.get(key), list) and isinstance(value, list):
            merged[key] = [*merged[key], *value]
        else:
            merged[key] = value
    return merged


def _object(schema: Mapping[str, Any], rng: random.Random, root: Any, depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    required = [r for r in schema.get("required") or [] if isinstance(r, str)]
    result: dict[str, Any] = {}
    for key, sub in properties.items():
        # Optional properties appear about half the time, as with a real model; never past the depth cap.
        if key in required or (depth < 2 and rng.random() < 0.5):
            result[key] = value_for(sub, rng, key, root, depth + 1)
    for key in required:
        if key not in result:
            result[key] = text.phrase(rng)
    return result


def _array(schema: Mapping[str, Any], rng: random.Random, name: str, root: Any, depth: int) -> list[Any]:
    low = int(schema.get("minItems") or 0)
    high = schema.get("maxItems")
    high = int(high) if isinstance(high, int) else max(low, 3)
    fewest = min(max(low, 1), high)
    size = low if depth >= _MAX_DEPTH else rng.randint(fewest, max(fewest, min(high, 3)))
    items = schema.get("items")
    prefix = schema.get("prefixItems", items if isinstance(items, list) else None)
    if isinstance(prefix, list):  # tuple form: one schema per position (draft 2020-12, or draft 7's list)
        return [value_for(s, rng, name, root, depth + 1) for s in prefix]
    item_schema = items if items is not None else {"type": "string"}
    values: list[Any] = []
    # Unique items may need a few extra draws (an enum of 2 cannot fill 3 distinct slots: stop there).
    for _ in range(size * 4 if schema.get("uniqueItems") else size):
        if len(values) == size:
            break
        value = value_for(item_schema, rng, name, root, depth + 1)
        if not (schema.get("uniqueItems") and value in values):
            values.append(value)
    return values


def _bounds(schema: Mapping[str, Any], low: float, high: float) -> tuple[float, float]:
    if isinstance(schema.get("minimum"), int | float):
        low = schema["minimum"]
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        low = schema["exclusiveMinimum"] + 1
    if isinstance(schema.get("maximum"), int | float):
        high = schema["maximum"]
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        high = schema["exclusiveMaximum"] - 1
    if high < low:
        high = low + (high if high > 0 else 100)
    return low, high


def _integer(schema: Mapping[str, Any], rng: random.Random, name: str) -> int:
    default_high = 10 if name.lower() in ("count", "limit", "n", "top_k", "quantity", "days") else 100
    low, high = _bounds(schema, 1, default_high)
    return rng.randint(int(low), max(int(low), int(high)))


def _number(schema: Mapping[str, Any], rng: random.Random) -> float:
    low, high = _bounds(schema, 0, 100)
    return round(rng.uniform(low, high), 2)


def _string(schema: Mapping[str, Any], rng: random.Random, name: str) -> str:
    fmt = schema.get("format")
    value = _FORMATS.get(fmt) if isinstance(fmt, str) else None
    if value is None:
        lowered = name.lower()
        value = next((rng.choice(values) for keys, values in _HINTS if any(k in lowered for k in keys)), None)
    if value is None:
        value = text.sentence(rng) if name.lower() in _PROSE_NAMES else text.phrase(rng)
    low = schema.get("minLength")
    high = schema.get("maxLength")
    if isinstance(low, int) and len(value) < low:
        value = value + "x" * (low - len(value))
    if isinstance(high, int) and len(value) > high:
        value = value[:high]
    return value
