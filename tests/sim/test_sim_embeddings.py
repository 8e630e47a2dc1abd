"""Embeddings through the openai SDK: floats, base64 (the SDK's default), dimensions, tokens."""

from __future__ import annotations

import math

import openai
import pytest
import tiktoken

MODEL = "sim/text-embedding-3-small"


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_float_and_base64_give_the_same_unit_vectors(client: openai.OpenAI) -> None:
    texts = ["The cat sat on the mat.", "Quarterly revenue grew by four percent."]
    as_floats = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    # Without encoding_format the SDK asks for base64 and decodes little-endian float32 itself.
    as_base64 = client.embeddings.create(model=MODEL, input=texts)
    assert [d.index for d in as_floats.data] == [0, 1]
    for plain, packed in zip(as_floats.data, as_base64.data, strict=True):
        assert len(plain.embedding) == len(packed.embedding) == 1536
        assert math.isclose(math.sqrt(sum(v * v for v in plain.embedding)), 1.0, rel_tol=1e-6)
        assert all(
            math.isclose(x, y, abs_tol=1e-6) for x, y in zip(plain.embedding, packed.embedding, strict=True)
        )
    cl100k = tiktoken.get_encoding("cl100k_base")
    assert as_floats.usage.prompt_tokens == sum(len(cl100k.encode(t)) for t in texts)
    assert as_floats.usage.total_tokens == as_floats.usage.prompt_tokens
    assert as_floats.model == MODEL


def test_deterministic_and_similar_texts_are_closer(client: openai.OpenAI) -> None:
    def vector(text: str) -> list[float]:
        return client.embeddings.create(model=MODEL, input=text, encoding_format="float").data[0].embedding

    base = vector("How do I reset my password?")
    assert vector("How do I reset my password?") == base
    near = cosine(base, vector("How can I reset my password?"))
    far = cosine(base, vector("Best pizza toppings in Naples"))
    assert near > 0.6 > 0.2 > far


def test_dimensions_and_token_id_inputs(client: openai.OpenAI) -> None:
    short = client.embeddings.create(model=MODEL, input="hello", dimensions=256, encoding_format="float")
    assert len(short.data[0].embedding) == 256
    tokens = client.embeddings.create(model=MODEL, input=[[15339, 1917], [9906]], encoding_format="float")
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 3


def test_invalid_input_is_rejected(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match=r"'\$.input' is invalid"):
        client.embeddings.create(model=MODEL, input="")
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=MODEL, input="x", encoding_format="hex")  # type: ignore[arg-type]
    assert caught.value.param == "encoding_format"
