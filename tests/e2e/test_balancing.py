"""Load balancing and fallbacks seen from the client: one deployment failing, none of it showing.

Each alias pairs a healthy simulator with one that fails in one way (every answer a 500,
no answer at all, nothing listening, or just slow). A `Recorder` in front of a simulator
counts what really reached it. The client is the official openai SDK with `max_retries=0`,
so any error the gateway let through would fail the test.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from tests.support.procs import Proc, free_port, run_gateway, run_sim, team_key
from tests.support.recorder import Recorder, recording

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

HI: list[Any] = [{"role": "user", "content": "hi"}]
DEAD_PORT = free_port()
FAILURES_BEFORE_COOLDOWN = 3
WORKERS = 4
CONFIG = """
store: {{backend: memory}}
router:
  retries: 2
  backoff_base_s: 0.01
  backoff_max_s: 0.02
  cooldown_s: 60
  failures_before_cooldown: 3
  latency_exploration: 0.05
stages: {{auth: {{cache_ttl_s: 0}}}}
models:
  burst-500:
    deployments:
      - {{provider: openai_compat, model: b500-bad, api_base: "{bad}/v1", api_key: k}}
      - {{provider: openai_compat, model: b500-good, api_base: "{good}/v1", api_key: k}}
  burst-500-lo:
    strategy: least_outstanding
    deployments:
      - {{provider: openai_compat, model: lo500-bad, api_base: "{bad}/v1", api_key: k}}
      - {{provider: openai_compat, model: lo500-good, api_base: "{good}/v1", api_key: k}}
  burst-500-latency:
    strategy: latency
    deployments:
      - {{provider: openai_compat, model: lat500-bad, api_base: "{bad}/v1", api_key: k}}
      - {{provider: openai_compat, model: lat500-good, api_base: "{good}/v1", api_key: k}}
  burst-timeout:
    deployments:
      - {{provider: openai_compat, model: hang, api_base: "{hang}/v1", api_key: k, timeout_s: 0.5}}
      - {{provider: openai_compat, model: timeout-good, api_base: "{good}/v1", api_key: k}}
  burst-refused:
    strategy: least_outstanding
    deployments:
      - {{provider: openai_compat, model: gpt-4o, api_base: "http://127.0.0.1:{dead}/v1", api_key: k}}
      - {{provider: openai_compat, model: refused-good, api_base: "{good}/v1", api_key: k}}
  spread:
    strategy: least_outstanding
    deployments:
      - {{provider: openai_compat, model: spread-heavy, api_base: "{good}/v1", api_key: k, weight: 100}}
      - {{provider: openai_compat, model: spread-light, api_base: "{good}/v1", api_key: k, weight: 1}}
  fastest:
    strategy: latency
    deployments:
      - {{provider: openai_compat, model: lat-slow, api_base: "{slow}/v1", api_key: k, weight: 100}}
      - {{provider: openai_compat, model: lat-fast, api_base: "{good}/v1", api_key: k}}
  small:
    deployments: [{{provider: openai_compat, model: gpt-4, api_base: "{good}/v1", api_key: k}}]
    fallbacks: [large]
  large:
    deployments: [{{provider: openai_compat, model: gpt-4-32k, api_base: "{good}/v1", api_key: k}}]
"""


@pytest.fixture(scope="module")
def hang(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with run_sim(tmp_path_factory.mktemp("sim-hang"), "--fault", "timeout", "--fault-rate", "1") as proc:
        yield proc


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorder]:
    with run_sim(tmp_path_factory.mktemp("sim-slow"), "--latency-ms", "150") as proc:
        with recording(proc.url) as recorder:
            yield recorder


@pytest.fixture(scope="module")
def balanced(
    good: Recorder, bad: Recorder, hang: Proc, slow: Recorder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    work = tmp_path_factory.mktemp("balancing")
    config = CONFIG.format(good=good.url, bad=bad.url, hang=hang.url, slow=slow.url, dead=DEAD_PORT)
    with run_gateway(work, config) as proc:
        yield proc


@pytest.fixture(scope="module")
def sdk(balanced: Proc) -> Iterator[openai.OpenAI]:
    key = team_key(balanced, "balancing")
    with openai.OpenAI(base_url=balanced.v1, api_key=key, max_retries=0, timeout=30) as client:
        yield client


def served_by(sdk: openai.OpenAI, model: str, **kwargs: Any) -> str:
    """The x-tollgate-model of one request that must succeed."""
    raw = sdk.chat.completions.with_raw_response.create(
        model=model, messages=kwargs.pop("messages", HI), max_tokens=3, **kwargs
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    return raw.headers["x-tollgate-model"]


def burst(sdk: openai.OpenAI, model: str, requests: int = 24, **kwargs: Any) -> Counter[str]:
    with ThreadPoolExecutor(WORKERS) as pool:
        return Counter(pool.map(lambda _: served_by(sdk, model, **kwargs), range(requests)))


# -- one deployment failing: the client sees nothing ------------------------------------------------


@pytest.mark.parametrize("alias", ["burst-500", "burst-500-lo", "burst-500-latency"])
def test_a_burst_sees_no_error_while_one_deployment_answers_500(
    sdk: openai.OpenAI, bad: Recorder, alias: str
) -> None:
    prefix = {"burst-500": "b500", "burst-500-lo": "lo500", "burst-500-latency": "lat500"}[alias]
    served = burst(sdk, alias)
    assert served == Counter({f"{prefix}-good": 24})
    # It cooled down after its third failure; requests already on their way may add one each.
    failed = bad.count(f"{prefix}-bad")
    assert FAILURES_BEFORE_COOLDOWN <= failed <= FAILURES_BEFORE_COOLDOWN + WORKERS
    assert burst(sdk, alias, requests=8) == Counter({f"{prefix}-good": 8})
    assert bad.count(f"{prefix}-bad") == failed  # cooling down: not asked again


def test_a_burst_sees_no_error_while_one_deployment_never_answers(sdk: openai.OpenAI) -> None:
    assert burst(sdk, "burst-timeout") == Counter({"timeout-good": 24})
    # Cooling down now: nobody waits for the hung deployment's timeout any more.
    started = time.monotonic()
    assert burst(sdk, "burst-timeout", requests=8) == Counter({"timeout-good": 8})
    assert time.monotonic() - started < 0.5 * 2


def test_a_burst_sees_no_error_while_one_deployment_refuses_connections(sdk: openai.OpenAI) -> None:
    assert burst(sdk, "burst-refused") == Counter({"refused-good": 24})


def test_a_failing_stream_deployment_is_invisible_too(sdk: openai.OpenAI) -> None:
    for _ in range(6):
        stream = sdk.chat.completions.create(model="burst-500", messages=HI, max_tokens=5, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


# -- strategies ---------------------------------------------------------------------------------------


def test_least_outstanding_spreads_concurrent_slow_requests(sdk: openai.OpenAI, good: Recorder) -> None:
    # Weight alone would send ~99% to the heavy one; in flight at once, they are shared out.
    with ThreadPoolExecutor(8) as pool:
        served = Counter(
            pool.map(lambda _: served_by(sdk, "spread", extra_headers={"x-sim-latency-ms": "600"}), range(8))
        )
    assert served["spread-light"] >= 3, served
    assert served["spread-heavy"] >= 3, served


def test_latency_prefers_the_fast_deployment(sdk: openai.OpenAI, slow: Recorder) -> None:
    served = Counter(served_by(sdk, "fastest") for _ in range(60))
    # The slow one has all the weight, but after its first sample it gets only the exploration share.
    assert served["lat-fast"] >= 48, served
    assert slow.count("lat-slow") == served["lat-slow"] >= 1


# -- context-window overflow --------------------------------------------------------------------------

LONG: list[Any] = [{"role": "user", "content": "lorem " * 9000}]  # ~9,000 tokens: past gpt-4's 8,192


def test_a_prompt_too_long_for_the_model_is_answered_by_the_larger_fallback(
    sdk: openai.OpenAI, good: Recorder
) -> None:
    assert served_by(sdk, "small", messages=LONG) == "gpt-4-32k"
    assert [s.status for s in good.requests("gpt-4")] == [400]
    # A short prompt still goes to the first model.
    assert served_by(sdk, "small") == "gpt-4"


def test_a_streamed_prompt_too_long_is_answered_by_the_fallback(sdk: openai.OpenAI) -> None:
    with sdk.chat.completions.with_streaming_response.create(
        model="small", messages=LONG, max_tokens=5, stream=True
    ) as response:
        assert response.headers["x-tollgate-model"] == "gpt-4-32k"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text


def test_a_prompt_too_long_for_every_model_gets_the_providers_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="large", messages=[{"role": "user", "content": "lorem " * 33000}])
    assert (caught.value.code, caught.value.param) == ("context_length_exceeded", "messages")
    assert "maximum context length is 32768 tokens" in caught.value.message
