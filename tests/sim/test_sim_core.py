"""The pure parts: schema-valid values, prompt caching rules, token splitting, controls."""

from __future__ import annotations

import random
from typing import Any

import jsonschema
import pytest

from gateway.config import SimConfig
from gateway.errors import InvalidRequest
from gateway.sim import tokens
from gateway.sim.core import SimCore
from gateway.sim.faults import Controls, FaultInjector
from gateway.sim.schema import value_for

SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
    {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "score": {"type": "number", "minimum": 0.5, "maximum": 0.75},
            "count": {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 13},
            "flags": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 2},
            "kind": {"enum": ["x", "y", 3]},
            "fixed": {"const": "always"},
            "maybe": {"type": ["string", "null"], "maxLength": 4},
            "code": {"type": "string", "minLength": 12},
        },
        "required": ["id", "score", "count", "flags", "kind", "fixed", "maybe", "code"],
    },
    {
        "$defs": {"step": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}, "minItems": 3},
            "either": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 100}]},
            "both": {
                "allOf": [{"properties": {"p": {"type": "string"}}, "required": ["p"]}, {"type": "object"}]
            },
            "unique": {"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": True, "minItems": 2},
        },
        "required": ["steps", "either", "both", "unique"],
    },
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_generated_values_satisfy_their_schema(schema: dict[str, Any]) -> None:
    for seed in range(25):
        jsonschema.validate(value_for(schema, random.Random(seed)), schema)


def test_property_names_pick_realistic_values() -> None:
    value = value_for({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
                      random.Random(1))  # fmt: skip
    assert "," in value["location"]  # "City, Country"


def test_prompt_cache_follows_openais_rule() -> None:
    cache = tokens.PromptCache()
    short = list(range(1023))
    assert cache.lookup_and_store("m", short) == cache.lookup_and_store("m", short) == 0
    long = list(range(1300))
    assert cache.lookup_and_store("m", long) == 0
    assert cache.lookup_and_store("m", long) == 1280  # whole 128-token increments only
    assert cache.lookup_and_store("m", [*long[:1100], 7, 7, 7]) == 1024  # the shared prefix
    assert cache.lookup_and_store("other-model", long) == 0


def test_prompt_cache_is_bounded() -> None:
    cache = tokens.PromptCache(max_entries=4)
    first = list(range(2000))
    cache.lookup_and_store("m", first)
    assert len(cache) == 4
    cache.lookup_and_store("m", [5, *first[1:]])
    assert len(cache) == 4
    assert cache.lookup_and_store("m", first) == 0  # evicted, least recently used first


def test_split_pieces_keeps_multibyte_characters_whole() -> None:
    enc = tokens.encoding_for("gpt-4o")
    text = "Smörgåsbord 🍣🍜 naïve café — 東京タワー."
    pieces = tokens.split_pieces(enc, text, random.Random(0))
    assert "".join(p.text for p in pieces) == text
    assert sum(len(p.tokens) for p in pieces) == len(enc.encode(text))
    assert all("\ufffd" not in p.text for p in pieces)


def test_encoding_by_model_family() -> None:
    assert tokens.encoding_for("sim/gpt-4o-mini").name == "o200k_base"
    assert tokens.encoding_for("gpt-4.1-nano").name == "o200k_base"
    assert tokens.encoding_for("sim/claude-3-5-haiku-latest").name == "cl100k_base"
    assert tokens.encoding_for("gpt-3.5-turbo").name == "cl100k_base"


def test_core_chunks_rebuild_the_completion() -> None:
    core = SimCore()
    body = {"model": "sim/gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "n": 2, "seed": 4}
    whole = core.chat_completion(body)
    chunks = core.chat_chunks({**body, "stream": True, "stream_options": {"include_usage": True}})
    texts = ["", ""]
    for chunk in chunks[:-1]:
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
    assert texts == [c["message"]["content"] for c in whole["choices"]]
    assert chunks[-1]["usage"] == whole["usage"]


def test_legacy_completion_echo_and_token_prompts() -> None:
    core = SimCore()
    enc = tokens.encoding_for("gpt-3.5-turbo-instruct")
    by_text = core.text_completion({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", "echo": True})
    by_ids = core.text_completion(
        {"model": "gpt-3.5-turbo-instruct", "prompt": enc.encode("Say hi"), "echo": True}
    )
    assert by_text["choices"][0]["text"].startswith("Say hi")
    assert by_ids["choices"][0]["text"] == by_text["choices"][0]["text"]
    with pytest.raises(InvalidRequest) as caught:
        core.text_completion({"model": "x"})
    assert caught.value.param == "prompt"


def test_controls_header_beats_marker_beats_config() -> None:
    injector = FaultInjector(SimConfig(ttft_ms=50, tokens_per_s=20))
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi [[sim:ttft_ms=70]]"}]}]}
    assert injector.controls({}, {}) == Controls(ttft_ms=50, tokens_per_s=20)
    assert injector.controls(body, {}).ttft_ms == 70
    assert injector.controls(body, {"X-Sim-TTFT-Ms": "90"}).ttft_ms == 90
    assert injector.controls({"prompt": "[[sim:fault=reset]]"}, {}).fault == "reset"
    with pytest.raises(InvalidRequest, match="expected a number"):
        injector.controls({}, {"x-sim-latency-ms": "soon"})
    with pytest.raises(InvalidRequest, match="unknown simulator marker"):
        injector.controls({"prompt": "[[sim:falut=429]]"}, {})
