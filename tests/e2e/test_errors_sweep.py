"""A client's mistake is never the gateway's failure: a sweep of bad inputs on every endpoint.

Wrong types in every field, huge numbers, unicode, empty strings and nested garbage: each
answer is a clean 4xx in the endpoint's error shape (or a 200 where the value happens to be
valid), never a 5xx, never a traceback, and a 400 that names a parameter names the one
that was broken.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.support.procs import Proc, http

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GARBAGE: dict[str, Any] = {
    "null": None,
    "true": True,
    "negative": -1,
    "zero": 0,
    "huge-int": 10**30,
    "huge-negative": -(10**30),
    "huge-float": 1.5e308,
    "fraction": 3.7,
    "empty-string": "",
    "unicode": "🦄 ünïcödé \u202e\u0000 中文",
    "long-string": "x" * 20_000,
    "empty-list": [],
    "list-of-null": [None],
    "empty-object": {},
    "nested": {"a": {"b": [1, {"c": None}], "d": "🦄"}},
    "deep-list": [[[[[[]]]]]],
}

HI = [{"role": "user", "content": "hi"}]
BASES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "gpt-4o", "messages": HI, "max_tokens": 3},
    "/v1/completions": {"model": "gpt-4o", "prompt": "hi", "max_tokens": 3},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": "hi"},
    "/v1/messages": {"model": "gpt-4o", "messages": HI, "max_tokens": 3},
}
# Where the garbage goes: a top-level field, or a path into the body.
FIELDS: dict[str, list[tuple[str | int, ...]]] = {
    "/v1/chat/completions": [
        ("model",), ("messages",), ("stream",), ("stream_options",), ("tools",), ("tool_choice",),
        ("response_format",), ("n",), ("stop",), ("seed",), ("logprobs",), ("top_logprobs",), ("max_tokens",),
        ("max_completion_tokens",), ("temperature",), ("top_p",), ("presence_penalty",), ("frequency_penalty",),
        ("user",), ("logit_bias",), ("parallel_tool_calls",), ("messages", 0), ("messages", 0, "role"),
        ("messages", 0, "content"), ("messages", 0, "name"), ("messages", 0, "tool_calls"),
    ],
    "/v1/completions": [
        ("model",), ("prompt",), ("stream",), ("n",), ("stop",), ("max_tokens",), ("temperature",), ("logprobs",),
        ("echo",), ("suffix",), ("best_of",), ("seed",),
    ],
    "/v1/embeddings": [("model",), ("input",), ("encoding_format",), ("dimensions",), ("user",), ("stream",)],
    "/v1/messages": [
        ("model",), ("max_tokens",), ("messages",), ("system",), ("temperature",), ("top_p",), ("top_k",),
        ("stop_sequences",), ("stream",), ("tools",), ("tool_choice",), ("metadata",), ("thinking",),
        ("messages", 0), ("messages", 0, "role"), ("messages", 0, "content"),
    ],
}  # fmt: skip
CASES = [(path, field) for path, fields in FIELDS.items() for field in fields]


def with_value(base: dict[str, Any], where: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(base)
    target: Any = body
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = value
    return body


def check_answer(path: str, field: str, status: int, answer: Any) -> None:
    assert status < 500, answer
    assert "Traceback" not in str(answer)
    if status < 400:
        return
    assert status in (400, 404), answer
    if path == "/v1/messages":
        assert answer["type"] == "error"
        assert set(answer["error"]) == {"type", "message"}
        assert answer["error"]["type"] in ("invalid_request_error", "not_found_error")
        return
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str) and error["message"]
    if error["param"] is not None:
        # "messages[0].content" names "messages"; "messages" may name its items.
        assert error["param"].split("[")[0].split(".")[0] == field, error


@pytest.mark.parametrize(("path", "where"), CASES, ids=[f"{p[4:]}:{'.'.join(map(str, w))}" for p, w in CASES])
def test_garbage_in_a_field_is_a_clean_client_error(
    gateway: Proc, api_key: str, path: str, where: tuple[str | int, ...]
) -> None:
    for name, value in GARBAGE.items():
        body = with_value(BASES[path], where, value)
        # The stdlib encoder: orjson refuses integers past 64 bits, which is part of the point.
        raw = json.dumps(body, ensure_ascii=False).encode()
        status, _, answer = http(
            "POST", gateway.url + path, raw=raw, headers={"authorization": f"Bearer {api_key}"}
        )
        check_answer(path, str(where[0]), status, answer)
        assert status != 404 or where == ("model",), (name, answer)


NOT_JSON = "Request body is not valid JSON: "
RAW_BODIES = {
    "invalid-utf8": (b'{"model": "gpt-4o", "messages": "\xff\xfe"}', NOT_JSON + "str is not valid UTF-8"),
    "bom": (b'\xef\xbb\xbf{"model": "gpt-4o"}', NOT_JSON + "UTF-8 byte order mark (BOM) is not supported"),
    "nan": (b'{"model": "gpt-4o", "temperature": NaN}', NOT_JSON + "unexpected character"),
    "infinity": (b'{"model": "gpt-4o", "temperature": 1e999}', NOT_JSON + "number is infinity"),
    "trailing-garbage": (
        b'{"model": "gpt-4o"} {"model": "gpt-4o"}',
        NOT_JSON + "unexpected content after document",
    ),
    "deep-list": (b"[" * 100_000, NOT_JSON + "depth limit exceeded"),
    "deep-object": (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, NOT_JSON + "depth limit exceeded"),
    "lone-surrogate": (
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "\\ud800"}]}',
        NOT_JSON,
    ),
    "whitespace": (b"   \n\t ", NOT_JSON + "input data is empty"),
    "a-number": (b"42", "Request body must be a JSON object."),
}


@pytest.mark.parametrize("path", list(BASES))
def test_garbage_bytes_are_a_clean_400(gateway: Proc, api_key: str, path: str) -> None:
    for name, (raw, message) in RAW_BODIES.items():
        status, headers, answer = http(
            "POST", gateway.url + path, raw=raw, headers={"authorization": f"Bearer {api_key}"}
        )
        assert (status, headers["content-type"]) == (400, "application/json"), (name, answer)
        error = answer["error"]
        assert (error["type"], error["message"][: len(message)]) == ("invalid_request_error", message), name
        if path != "/v1/messages":
            assert (error["param"], error["code"]) == (None, "invalid_json"), name


GARBAGE_CREDENTIALS = [
    "Bearer",
    "Bearer ",
    "Basic dXNlcjpwYXNz",
    "Bearer tg-" + "x" * 5000,
    "Bearer \u00e9\u00e8",
    "Token tg-1",
]


@pytest.mark.parametrize("authorization", GARBAGE_CREDENTIALS)
def test_garbage_credentials_are_401(gateway: Proc, authorization: str) -> None:
    headers = {"authorization": authorization}
    for path, body in BASES.items():
        status, _, answer = http("POST", gateway.url + path, body=body, headers=headers)
        assert status == 401, answer
        error = answer["error"]
        assert error["type"] == ("authentication_error" if path.endswith("/messages") else "invalid_request_error")
        assert error.get("code", "invalid_api_key") in ("missing_api_key", "invalid_api_key")
        assert "x" * 20 not in error["message"]
    status, _, answer = http("GET", gateway.url + "/admin/teams", headers=headers)
    assert (status, answer["error"]["type"]) == (401, "invalid_request_error")


@pytest.mark.parametrize("api_key", ["\u00e9\u00e8", "tg-" + "x" * 5000, " "])
def test_garbage_x_api_key_is_401_on_messages(gateway: Proc, api_key: str) -> None:
    status, _, answer = http(
        "POST", gateway.v1 + "/messages", body=BASES["/v1/messages"], headers={"x-api-key": api_key}
    )
    assert (status, answer["error"]["type"]) == (401, "authentication_error"), answer
