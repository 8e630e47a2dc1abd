"""What a client sees when the upstream fails: rate limits, errors, silence, broken streams.

The simulated provider injects each failure on request (`x-sim-fault`); the gateway is its
own process with a router that never cools a deployment down, so one test's deliberate
failures do not turn the next test's answer into a "cooling down" 503.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.support.procs import Proc, free_port, http, run_gateway, team_key
from tests.support.wire_errors import anthropic_error, openai_error, sse_events

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

HI = [{"role": "user", "content": "Write a few sentences about caching."}]
DEAD_PORT = free_port()
CONFIG = """
store: {{backend: memory}}
# Deliberate failures here must never cool a deployment down for the tests after them.
router: {{retries: 1, backoff_base_s: 0.01, backoff_max_s: 0.02, failures_before_cooldown: 1000}}
stages: {{auth: {{cache_ttl_s: 0}}}}
models:
  gpt-4o:
    deployments: [{{provider: openai_compat, model: gpt-4o, api_base: "{sim}/v1", api_key: k, timeout_s: 1}}]
  text-embedding-3-small:
    deployments: [{{provider: openai_compat, model: text-embedding-3-small, api_base: "{sim}/v1", api_key: k, timeout_s: 1}}]
  nowhere:
    deployments: [{{provider: openai_compat, model: gpt-4o, api_base: "http://127.0.0.1:{dead}/v1", api_key: k, timeout_s: 1}}]
  claude-3-5-haiku:
    deployments: [{{provider: anthropic, model: claude-3-5-haiku-latest, api_base: "{sim}", api_key: k, timeout_s: 1}}]
"""
RATE_LIMITED = (
    "openai_compat/gpt-4o: Rate limit reached for gpt-4o in organization org-simulated on requests per min (RPM): "
    "Limit 500, Used 500, Requested 1. Please try again in 0.1s. "
    "Visit https://platform.openai.com/account/rate-limits to learn more."
)
SERVER_ERROR = (
    "openai_compat/gpt-4o: The server had an error while processing your request. Sorry about that!"
)
OVERLOADED = "openai_compat/gpt-4o: The server is overloaded or not ready yet."
REJECTED = "openai_compat/gpt-4o: Invalid request: rejected by the simulator's injected 400 fault."
TIMED_OUT = "openai_compat/gpt-4o: no response within 1s"


@pytest.fixture(scope="module")
def gw(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    work: Path = tmp_path_factory.mktemp("upstream-faults")
    with run_gateway(work, CONFIG.format(sim=sim.url, dead=DEAD_PORT)) as proc:
        yield proc


@pytest.fixture(scope="module")
def key(gw: Proc) -> str:
    return team_key(gw, "faults")


@pytest.fixture(scope="module")
def sdk(gw: Proc, key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def claude(gw: Proc, key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=10) as client:
        yield client


def fault(kind: str) -> dict[str, str]:
    # A 429 says "retry after 0.1 s", so the gateway's retry waits no longer than that.
    return {"x-sim-fault": kind, "x-sim-retry-after": "0.1"}


def openai_body(message: str, type: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """The error object the openai SDK hands over as `err.body`."""
    return openai_error(message, type=type, param=param, code=code)["error"]


# -- OpenAI wire, answered with an error status -------------------------------------------------


def test_upstream_429_through_every_retry_is_429_with_retry_after(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=HI, extra_headers=fault("429"))
    err = caught.value
    assert err.status_code == 429
    assert err.body == openai_body(RATE_LIMITED, "rate_limit_error", "upstream_rate_limited")
    # HTTP's retry-after is whole seconds: the upstream's 0.1 s rounds up to 1.
    assert err.response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("kind", "error_class", "status", "body"),
    [
        ("500", openai.InternalServerError, 502, openai_body(SERVER_ERROR, "api_error", "upstream_error")),
        ("503", openai.InternalServerError, 503, openai_body(OVERLOADED, "api_error", "upstream_unavailable")),
        ("400", openai.BadRequestError, 400, openai_body(REJECTED, "invalid_request_error", "upstream_error")),
    ],
)  # fmt: skip
def test_upstream_error_status_reaches_the_client_with_the_providers_message(
    sdk: openai.OpenAI, kind: str, error_class: type[openai.APIStatusError], status: int, body: dict[str, Any]
) -> None:
    with pytest.raises(error_class) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=HI, extra_headers=fault(kind))
    assert caught.value.status_code == status
    assert caught.value.body == body


def test_upstream_rejection_keeps_the_providers_param_and_code(sdk: openai.OpenAI) -> None:
    # The gateway forwards fields it does not know; the provider is the one to reject this.
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=HI, response_format={"type": "json_schema"})
    assert caught.value.body == openai_body(
        "openai_compat/gpt-4o: Missing required parameter: 'response_format.json_schema'.",
        "invalid_request_error", "missing_required_parameter", param="response_format.json_schema",
    )  # fmt: skip


def test_upstream_500_on_embeddings_is_502(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.embeddings.create(model="text-embedding-3-small", input="hi", extra_headers=fault("500"))
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    assert caught.value.body["message"] == SERVER_ERROR.replace("gpt-4o", "text-embedding-3-small")


@pytest.mark.parametrize(
    ("kind", "status", "code", "message"),
    [
        ("malformed", 502, "upstream_error", "openai_compat/gpt-4o: upstream answered with malformed JSON"),
        (
            "reset",
            503,
            "upstream_unavailable",
            "openai_compat/gpt-4o: connection to {sim}/v1 lost: Server disconnected",
        ),
    ],
)
def test_upstream_answer_that_is_not_an_answer(
    gw: Proc, sim: Proc, key: str, kind: str, status: int, code: str, message: str
) -> None:
    body = {"model": "gpt-4o", "messages": HI}
    got = http(
        "POST",
        gw.v1 + "/chat/completions",
        body=body,
        headers={"authorization": f"Bearer {key}", **fault(kind)},
    )
    expected = openai_error(message.format(sim=sim.url), type="api_error", code=code)
    assert (got[0], got[2]) == (status, expected)


def test_nothing_listening_is_503(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model="nowhere", messages=HI)
    err = caught.value
    assert (err.status_code, err.code, err.type) == (503, "upstream_unavailable", "api_error")
    assert err.body["message"].startswith(
        f"openai_compat/gpt-4o: cannot connect to http://127.0.0.1:{DEAD_PORT}/v1: Cannot connect to host"
    )


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_silent_past_timeout_is_504(sdk: openai.OpenAI, stream: bool) -> None:
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(
            model="gpt-4o", messages=HI, stream=stream, extra_headers=fault("timeout")
        )
    # Two attempts (retries: 1) of one second each, then the answer: never the SDK's own 10 s timeout.
    assert 1.9 < time.monotonic() - started < 6
    assert caught.value.status_code == 504
    assert caught.value.body == openai_body(TIMED_OUT, "api_error", "upstream_timeout")


# -- OpenAI wire, mid-stream ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("reset", "openai_compat/gpt-4o: stream interrupted: "),
        ("malformed", "openai_compat/gpt-4o: upstream sent a malformed stream event"),
    ],
)
def test_stream_broken_midway_ends_in_an_error_event(sdk: openai.OpenAI, kind: str, message: str) -> None:
    stream = sdk.chat.completions.create(model="gpt-4o", messages=HI, stream=True, extra_headers=fault(kind))
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    err = caught.value
    assert not isinstance(err, openai.APIStatusError)  # the status was 200: the stream had begun
    assert err.body["message"].startswith(message)
    assert (err.type, err.code) == ("api_error", "upstream_error")


def test_stream_that_stalls_past_the_timeout_ends_in_an_error_event(sdk: openai.OpenAI) -> None:
    # The upstream starts the stream, then takes 2 s for its first token: longer than timeout_s.
    stream = sdk.chat.completions.create(
        model="gpt-4o", messages=HI, stream=True, extra_headers={"x-sim-ttft-ms": "2000"}
    )
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    assert caught.value.body == openai_body(
        "openai_compat/gpt-4o: stream stalled", "api_error", "upstream_timeout"
    )


def test_messages_stream_that_stalls_ends_with_event_error(gw: Proc, key: str) -> None:
    body = {"model": "gpt-4o", "max_tokens": 20, "stream": True, "messages": HI}
    status, _, raw = http(
        "POST", gw.v1 + "/messages", body=body, headers={"x-api-key": key, "x-sim-ttft-ms": "2000"}
    )
    assert status == 200
    assert sse_events(raw)[-1] == (
        "error",
        anthropic_error("openai_compat/gpt-4o: stream stalled", "api_error"),
    )


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_raw_stream_broken_midway_ends_with_the_error_and_no_done(gw: Proc, key: str, path: str) -> None:
    body: dict[str, Any] = {"model": "gpt-4o", "stream": True}
    body.update({"messages": HI} if path.endswith("chat/completions") else {"prompt": "Write about caching."})
    status, headers, raw = http(
        "POST", gw.url + path, body=body, headers={"authorization": f"Bearer {key}", **fault("malformed")}
    )
    assert (status, headers["content-type"]) == (200, "text/event-stream")
    events = sse_events(raw)
    message = "openai_compat/gpt-4o: upstream sent a malformed stream event"
    assert events[-1] == (None, openai_error(message, type="api_error", code="upstream_error"))
    assert all(data != "[DONE]" for _, data in events)


# -- Anthropic wire -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error_class", "status", "body"),
    [
        ("429", anthropic.RateLimitError, 429, anthropic_error(RATE_LIMITED, "rate_limit_error")),
        ("500", anthropic.InternalServerError, 502, anthropic_error(SERVER_ERROR, "api_error")),
        ("503", anthropic.InternalServerError, 503, anthropic_error(OVERLOADED, "overloaded_error")),
        ("400", anthropic.BadRequestError, 400, anthropic_error(REJECTED, "invalid_request_error")),
        ("timeout", anthropic.InternalServerError, 504, anthropic_error(TIMED_OUT, "api_error")),
    ],
)
def test_messages_upstream_failure_is_anthropic_shaped(
    claude: anthropic.Anthropic,
    kind: str,
    error_class: type[anthropic.APIStatusError],
    status: int,
    body: dict[str, Any],
) -> None:
    with pytest.raises(error_class) as caught:
        claude.messages.create(model="gpt-4o", max_tokens=20, messages=HI, extra_headers=fault(kind))
    assert caught.value.status_code == status
    assert caught.value.body == body
    if kind == "429":
        assert caught.value.response.headers["retry-after"] == "1"


def test_messages_nothing_listening_is_503_overloaded(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude.messages.create(model="nowhere", max_tokens=20, messages=HI)
    assert caught.value.status_code == 503
    assert caught.value.body["error"]["type"] == "overloaded_error"
    assert caught.value.body["error"]["message"].startswith("openai_compat/gpt-4o: cannot connect to")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("reset", "openai_compat/gpt-4o: stream interrupted: "),
        ("malformed", "openai_compat/gpt-4o: upstream sent a malformed stream event"),
    ],
)
def test_messages_stream_broken_midway_raises_in_the_sdk(
    claude: anthropic.Anthropic, kind: str, message: str
) -> None:
    with (
        claude.messages.stream(
            model="gpt-4o", max_tokens=50, messages=HI, extra_headers=fault(kind)
        ) as stream,
        pytest.raises(anthropic.APIStatusError) as caught,
    ):
        for _ in stream:
            pass
    assert caught.value.status_code == 200  # the stream had begun; the SDK raises on its `error` event
    body = caught.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    assert body["error"]["message"].startswith(message)


def test_messages_raw_stream_broken_midway_ends_with_event_error(gw: Proc, key: str) -> None:
    body = {"model": "gpt-4o", "max_tokens": 50, "stream": True, "messages": HI}
    status, _, raw = http(
        "POST", gw.v1 + "/messages", body=body, headers={"x-api-key": key, **fault("reset")}
    )
    assert status == 200
    events = sse_events(raw)
    assert events[0][0] == "message_start"
    name, data = events[-1]
    assert name == "error"
    assert data["type"] == "error"
    assert data["error"]["type"] == "api_error"
    assert data["error"]["message"].startswith("openai_compat/gpt-4o: stream interrupted: ")
    assert "message_stop" not in [name for name, _ in events]


def test_messages_through_the_anthropic_provider(claude: anthropic.Anthropic) -> None:
    """The same failures when the upstream is Anthropic itself (through litellm's translation)."""
    cases = [
        ("429", anthropic.RateLimitError, 429, "rate_limit_error",
         "This request would exceed the rate limit for your organization of 50 requests per minute. "
         "For details, refer to: https://docs.claude.com/en/api/rate-limits."),
        ("500", anthropic.InternalServerError, 502, "api_error", "Internal server error"),
        ("503", anthropic.InternalServerError, 503, "overloaded_error", "Overloaded"),
        ("400", anthropic.BadRequestError, 400, "invalid_request_error",
         "Invalid request: rejected by the simulator's injected 400 fault."),
    ]  # fmt: skip
    for kind, error_class, status, error_type, message in cases:
        with pytest.raises(error_class) as caught:
            claude.messages.create(
                model="claude-3-5-haiku", max_tokens=20, messages=HI, extra_headers=fault(kind)
            )
        assert caught.value.status_code == status, kind
        assert caught.value.body == anthropic_error(
            f"anthropic/claude-3-5-haiku-latest: {message}", error_type
        ), kind


def test_no_upstream_failure_leaks_a_traceback(gw: Proc, key: str) -> None:
    for kind in ("429", "500", "503", "400", "malformed", "reset"):
        for stream in (False, True):
            body = {"model": "gpt-4o", "messages": HI, "stream": stream}
            headers = {"authorization": f"Bearer {key}", **fault(kind)}
            status, _, answer = http("POST", gw.v1 + "/chat/completions", body=body, headers=headers)
            assert status != 500, (kind, stream, answer)
            assert "Traceback" not in str(answer), (kind, stream)
    # The gateway logs its own bugs as these; an upstream failure is not one.
    assert '"msg":"unhandled error"' not in gw.logs()
    assert '"msg":"stream failed"' not in gw.logs()
