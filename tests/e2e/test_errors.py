"""What a client sees for its own mistakes: bad bodies and fields, unknown models and paths, 413s.

Each case talks to a real gateway process over loopback, through the official SDK where an
application would meet the error, and over plain HTTP where the SDK would hide the detail
(the exact body of a non-JSON request, a 413, response headers).
"""

from __future__ import annotations

from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest

from tests.support.procs import Proc, http, run_gateway
from tests.support.wire_errors import anthropic_error, openai_error

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

HI = [{"role": "user", "content": "hi"}]
OPENAI_PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]


def post(
    gateway: Proc, path: str, key: str | None, body: Any = None, raw: bytes | None = None
) -> tuple[int, dict[str, str], Any]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return http("POST", gateway.url + path, body=body, raw=raw, headers=headers)


@pytest.fixture(scope="module")
def sdk(gateway: Proc, api_key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.v1, api_key=api_key, max_retries=0, timeout=10) as client:
        yield client


# -- 400: the body ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*OPENAI_PATHS, "/v1/messages"])
def test_body_that_is_not_json_is_400(gateway: Proc, api_key: str, path: str) -> None:
    status, headers, body = post(gateway, path, api_key, raw=b'{"model": "gpt-4o",')
    assert status == 400
    assert headers["content-type"] == "application/json"
    error = body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("Request body is not valid JSON: ")
    if path != "/v1/messages":
        assert (error["param"], error["code"]) == (None, "invalid_json")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[1, 2]", "Request body must be a JSON object."),
        (b'"a string"', "Request body must be a JSON object."),
        (b"null", "Request body must be a JSON object."),
        (b"", "Request body is empty; expected a JSON object."),
    ],
)
@pytest.mark.parametrize("path", OPENAI_PATHS)
def test_body_that_is_not_an_object_is_400(
    gateway: Proc, api_key: str, path: str, raw: bytes, message: str
) -> None:
    assert post(gateway, path, api_key, raw=raw)[::2] == (400, openai_error(message, code="invalid_json"))


def test_messages_body_that_is_not_an_object_is_400_in_anthropic_shape(gateway: Proc, api_key: str) -> None:
    status, _, body = post(gateway, "/v1/messages", api_key, raw=b"[1, 2]")
    assert (status, body) == (400, anthropic_error("Request body must be a JSON object."))


# -- 400: a field -------------------------------------------------------------------------------

CHAT = {"model": "gpt-4o", "messages": HI}
COMPLETION = {"model": "gpt-4o", "prompt": "hi"}
EMBEDDING = {"model": "text-embedding-3-small", "input": "hi"}
ROLES = "'system', 'developer', 'user', 'assistant', 'tool' or 'function'"


@pytest.mark.parametrize(
    ("path", "body", "param", "message", "code"),
    [
        ("/v1/chat/completions", {"model": "gpt-4o"}, "messages",
         "Missing required parameter: 'messages'.", "missing_required_parameter"),
        ("/v1/chat/completions", {"messages": HI}, "model",
         "Missing required parameter: 'model'.", "missing_required_parameter"),
        ("/v1/chat/completions", {**CHAT, "messages": [*HI, {"role": "robot", "content": "b"}]}, "messages[1].role",
         f"Invalid value for 'messages[1].role': input should be {ROLES}.", "invalid_value"),
        ("/v1/chat/completions", {**CHAT, "temperature": 5}, "temperature",
         "Invalid type or value for 'temperature': input should be less than or equal to 2.", "invalid_value"),
        ("/v1/chat/completions", {**CHAT, "messages": []}, "messages",
         "Invalid 'messages': list should have at least 1 item after validation, not 0.", "invalid_value"),
        ("/v1/chat/completions", {**CHAT, "n": 0}, "n",
         "Invalid type or value for 'n': input should be greater than or equal to 1.", "invalid_value"),
        ("/v1/chat/completions", {**CHAT, "model": ""}, "model",
         "Invalid type or value for 'model': string should have at least 1 character.", "invalid_value"),
        ("/v1/completions", {"model": "gpt-4o"}, "prompt",
         "Missing required parameter: 'prompt'.", "missing_required_parameter"),
        ("/v1/completions", {"prompt": "hi"}, "model",
         "Missing required parameter: 'model'.", "missing_required_parameter"),
        ("/v1/completions", {**COMPLETION, "temperature": "hot"}, "temperature",
         "Invalid type or value for 'temperature': input should be a valid number, unable to parse string as a number.",
         "invalid_value"),
        ("/v1/embeddings", {"model": "text-embedding-3-small"}, "input",
         "Missing required parameter: 'input'.", "missing_required_parameter"),
        ("/v1/embeddings", {"input": "hi"}, "model",
         "Missing required parameter: 'model'.", "missing_required_parameter"),
        ("/v1/embeddings", {**EMBEDDING, "encoding_format": "hex"}, "encoding_format",
         "Invalid value for 'encoding_format': input should be 'float' or 'base64'.", "invalid_value"),
        ("/v1/embeddings", {**EMBEDDING, "dimensions": 0}, "dimensions",
         "Invalid type or value for 'dimensions': input should be greater than or equal to 1.", "invalid_value"),
    ],
)  # fmt: skip
def test_invalid_field_is_400_naming_it(gateway: Proc, api_key: str, path: str, body: dict[str, Any], param: str,
                                        message: str, code: str) -> None:  # fmt: skip
    assert post(gateway, path, api_key, body)[::2] == (400, openai_error(message, param=param, code=code))


def test_sdk_raises_bad_request_with_param_and_code(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=[*HI, {"role": "robot", "content": "b"}])
    expected = openai_error(
        f"Invalid value for 'messages[1].role': input should be {ROLES}.",
        param="messages[1].role",
        code="invalid_value",
    )["error"]
    err = caught.value
    assert (err.status_code, err.param, err.code) == (400, "messages[1].role", "invalid_value")
    assert err.body == expected
    assert len(err.response.headers["x-request-id"]) == 24


def test_sdk_raises_bad_request_on_embeddings(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="text-embedding-3-small", input="hi", dimensions=-3)
    assert (caught.value.param, caught.value.code) == ("dimensions", "invalid_value")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "gpt-4o", "messages": HI}, "max_tokens: Field required"),
        ({"max_tokens": 5, "messages": HI}, "model: Field required"),
        ({"model": "gpt-4o", "max_tokens": 0, "messages": HI}, "max_tokens: Input should be greater than or equal to 1"),
        ({"model": "gpt-4o", "max_tokens": 5, "messages": HI, "temperature": 1.5},
         "temperature: Input should be less than or equal to 1"),
        ({"model": "gpt-4o", "max_tokens": 5, "messages": HI, "top_kk": 3}, "top_kk: Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_invalid_messages_request_is_400_in_anthropic_shape(gateway: Proc, api_key: str, body: dict[str, Any],
                                                            message: str) -> None:  # fmt: skip
    assert post(gateway, "/v1/messages", api_key, body)[::2] == (400, anthropic_error(message))


def test_anthropic_sdk_raises_bad_request(gateway: Proc, api_key: str) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=api_key, max_retries=0, timeout=10)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="gpt-4o", max_tokens=5, messages=HI, extra_body={"temperature": 3})
    assert caught.value.status_code == 400
    assert caught.value.body == anthropic_error("temperature: Input should be less than or equal to 1")


# -- 404 / 405 ----------------------------------------------------------------------------------


def test_unknown_model_is_404_model_not_found(sdk: openai.OpenAI) -> None:
    message = "The model 'gpt-9-ultra' does not exist or you do not have access to it."
    for call in (
        lambda: sdk.chat.completions.create(model="gpt-9-ultra", messages=HI),
        lambda: sdk.completions.create(model="gpt-9-ultra", prompt="hi"),
        lambda: sdk.embeddings.create(model="gpt-9-ultra", input="hi"),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        err = caught.value
        assert (err.status_code, err.param, err.code) == (404, "model", "model_not_found")
        assert err.body == openai_error(message, param="model", code="model_not_found")["error"]


def test_unknown_model_on_messages_is_anthropic_not_found_error(gateway: Proc, api_key: str) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=api_key, max_retries=0, timeout=10)
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="claude-9", max_tokens=5, messages=HI)
    assert caught.value.status_code == 404
    assert caught.value.body == anthropic_error(
        "The model 'claude-9' does not exist or you do not have access to it.", "not_found_error"
    )


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/nope"), ("POST", "/v1/chat/complete"), ("GET", "/")]
)
def test_unknown_path_is_404_in_openai_shape(gateway: Proc, api_key: str, method: str, path: str) -> None:
    status, headers, body = http(method, gateway.url + path, headers={"authorization": f"Bearer {api_key}"})
    assert (status, headers["content-type"]) == (404, "application/json")
    assert body == openai_error(f"Unknown path: {method} {path}.", code="unknown_url")


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/chat/completions"), ("PUT", "/v1/embeddings"),
                                              ("DELETE", "/v1/completions"), ("GET", "/chat/completions")])  # fmt: skip
def test_wrong_method_on_a_proxied_path_is_405(gateway: Proc, api_key: str, method: str, path: str) -> None:
    status, headers, body = http(method, gateway.url + path, headers={"authorization": f"Bearer {api_key}"})
    assert (status, headers["allow"]) == (405, "POST")
    assert body == openai_error(f"{method} is not allowed on {path}; use POST.", code="method_not_allowed")


def test_wrong_method_on_messages_is_405_in_anthropic_shape(gateway: Proc, api_key: str) -> None:
    status, headers, body = http("GET", gateway.url + "/v1/messages", headers={"x-api-key": api_key})
    assert (status, headers["allow"]) == (405, "POST")
    assert body == anthropic_error("GET is not allowed on /v1/messages; use POST.")


def test_wrong_method_on_a_control_path_is_405(gateway: Proc, api_key: str) -> None:
    status, headers, body = http(
        "POST", gateway.v1 + "/models", body={}, headers={"authorization": f"Bearer {api_key}"}
    )
    assert (status, set(headers["allow"].split(", "))) == (405, {"GET", "HEAD"})
    assert body == openai_error("POST is not allowed on /v1/models.", code="method_not_allowed")


# -- 413 ----------------------------------------------------------------------------------------

LIMIT = 2048
SMALL_CONFIG = """
store: {{backend: sqlite, path: "{db}"}}
server: {{max_body_bytes: {limit}}}
models:
  gpt-4o:
    deployments: [{{provider: openai_compat, model: gpt-4o, api_base: "{sim}/v1", api_key: k, timeout_s: 3}}]
"""


@pytest.fixture(scope="module")
def small(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    work: Path = tmp_path_factory.mktemp("small-body")
    with run_gateway(work, SMALL_CONFIG.format(db=work / "t.db", sim=sim.url, limit=LIMIT)) as proc:
        yield proc


def big_chat(size: int) -> dict[str, Any]:
    return {"model": "gpt-4o", "max_tokens": 2, "messages": [{"role": "user", "content": "x" * size}]}


def test_body_over_the_limit_is_413(small: Proc) -> None:
    status, headers, body = post(small, "/v1/chat/completions", small.master_key, big_chat(LIMIT))
    size = len(orjson.dumps(big_chat(LIMIT)))
    assert status == 413
    assert body == openai_error(
        f"Request body is {size} bytes; the limit is {LIMIT} bytes.", code="request_too_large"
    )
    assert headers["x-request-id"]
    # Just under the limit is served.
    assert post(small, "/v1/chat/completions", small.master_key, big_chat(LIMIT - 200))[0] == 200


def test_body_over_the_limit_on_messages_is_anthropic_request_too_large(small: Proc) -> None:
    client = anthropic.Anthropic(base_url=small.url, api_key=small.master_key, max_retries=0, timeout=10)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(
            model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x" * LIMIT}]
        )
    assert caught.value.status_code == 413
    assert caught.value.body["error"]["type"] == "request_too_large"
    assert caught.value.body["error"]["message"].endswith(f"the limit is {LIMIT} bytes.")


def test_chunked_body_over_the_limit_is_413(small: Proc) -> None:
    """Without a content-length the gateway counts the bytes as they come."""

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "'
        for _ in range(8):
            yield b"x" * 512
        yield b'"}]}'

    host, port = small.url.removeprefix("http://").split(":")
    connection = HTTPConnection(host, int(port), timeout=10)
    try:
        headers = {"authorization": f"Bearer {small.master_key}", "content-type": "application/json"}
        connection.request(
            "POST", "/v1/chat/completions", body=chunks(), headers=headers, encode_chunked=True
        )
        response = connection.getresponse()
        payload = orjson.loads(response.read())
    finally:
        connection.close()
    assert response.status == 413
    assert payload == openai_error(
        f"Request body exceeds the limit of {LIMIT} bytes.", code="request_too_large"
    )
