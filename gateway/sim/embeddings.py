"""Deterministic embeddings: unit vectors that behave enough like real ones to test with.

A vector is mostly a hashed bag of words (texts sharing words point the same way, so a
semantic cache in front of the simulator finds near-duplicates) plus a little noise seeded
by the whole text (different texts never coincide exactly).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from collections.abc import Mapping
from typing import Any

from gateway.sim import tokens, validate

DEFAULT_DIMENSIONS = 1536
_WORD = re.compile(r"\w+")
_SLOTS_PER_WORD = 4
_NOISE_WEIGHT = 0.3
_PARAMS = frozenset(("model", "input", "dimensions", "encoding_format", "user"))


def embedding_vector(model: str, item: str | list[int], dimensions: int) -> list[float]:
    words = _WORD.findall(item.lower()) if isinstance(item, str) else [str(t) for t in item]
    words_part = [0.0] * dimensions
    for word in words:
        digest = hashlib.blake2b(word.encode(), digest_size=4 * _SLOTS_PER_WORD, person=b"sim-emb").digest()
        for slot in range(_SLOTS_PER_WORD):
            value = int.from_bytes(digest[4 * slot : 4 * slot + 4], "little")
            words_part[value % dimensions] += 1.0 if value & 0x80000000 else -1.0
    key = f"{model}\x00{item}".encode()
    raw = hashlib.shake_256(key).digest(4 * dimensions)
    noise = [v / 4294967296.0 - 0.5 for v in struct.unpack(f"<{dimensions}I", raw)]
    words_norm = math.sqrt(sum(v * v for v in words_part)) or 1.0
    noise_norm = math.sqrt(sum(v * v for v in noise)) or 1.0
    mixed = [w / words_norm + _NOISE_WEIGHT * n / noise_norm for w, n in zip(words_part, noise, strict=True)]
    norm = math.sqrt(sum(v * v for v in mixed)) or 1.0
    return [v / norm for v in mixed]


def embeddings_response(body: Mapping[str, Any]) -> dict[str, Any]:
    """The `/v1/embeddings` answer; base64 is little-endian float32, as the openai SDK decodes it."""
    inputs = _inputs(body)
    model = str(body["model"])
    dimensions = int(body.get("dimensions") or DEFAULT_DIMENSIONS)
    as_base64 = body.get("encoding_format") == "base64"
    enc = tokens.encoding_for(model)
    data: list[dict[str, Any]] = []
    prompt_tokens = 0
    for index, item in enumerate(inputs):
        prompt_tokens += tokens.count(enc, item) if isinstance(item, str) else len(item)
        vector = embedding_vector(model.removeprefix("sim/"), item, dimensions)
        encoded: list[float] | str = vector
        if as_base64:
            encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def _inputs(body: Mapping[str, Any]) -> list[str | list[int]]:
    """Validated inputs: one string, strings, one list of token ids, or lists of token ids."""
    validate.check_known(body, _PARAMS)
    validate.require_model(body)
    validate.int_param(body, "dimensions", 1, 3072)
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        validate.fail(
            f"Invalid value: '{fmt}'. Supported values are: 'float' and 'base64'.",
            "encoding_format",
            "invalid_value",
        )
    raw = body.get("input")
    if raw is None:
        validate.fail("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    items = [raw] if isinstance(raw, str) else raw
    if (
        isinstance(items, list)
        and items
        and all(isinstance(t, int) and not isinstance(t, bool) for t in items)
    ):
        items = [items]
    if not isinstance(items, list) or not 0 < len(items) <= 2048 or not all(map(_valid_item, items)):
        validate.fail(
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
        )
    return items


def _valid_item(item: Any) -> bool:
    if isinstance(item, str):
        return bool(item)
    return (
        isinstance(item, list)
        and bool(item)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
    )
