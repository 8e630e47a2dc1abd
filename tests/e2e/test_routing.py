"""Retries, fallbacks, cooldown and weighted load balancing, seen from the client and upstream.

A `Recorder` sits between the gateway and each simulated provider, so a test can count the
requests that really reached an upstream, and when. One simulator answers normally; one
always answers 500 (`tollgate sim --fault 500 --fault-rate 1`). Each test has aliases of its
own: a deployment's health is per alias entry, so tests do not cool each other's down.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.procs import Proc, free_port, http, run_gateway, run_sim, team_key
from tests.support.recorder import Recorder, recording

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

HI = [{"role": "user", "content": "hi"}]
DEAD_PORT = free_port()
COOLDOWN_S = 3
CONFIG = """
store: {{backend: memory}}
router:
  retries: 2
  backoff_base_s: 0.01
  backoff_max_s: 0.02
  max_retry_after_s: 5
  cooldown_s: {cooldown}
  failures_before_cooldown: 3
stages: {{auth: {{cache_ttl_s: 0}}}}
models:
  retried:
    deployments:
      - {{provider: openai_compat, model: gpt-4o, api_base: "http://127.0.0.1:{dead}/v1", api_key: k, weight: 1000000}}
      - {{provider: openai_compat, model: gpt-4o-mini, api_base: "{good}/v1", api_key: k}}
  retried-counted:
    deployments:
      - {{provider: openai_compat, model: retry-bad, api_base: "{bad}/v1", api_key: k, weight: 1000000}}
      - {{provider: openai_compat, model: retry-good, api_base: "{good}/v1", api_key: k}}
  primary:
    deployments: [{{provider: openai_compat, model: primary-bad, api_base: "{bad}/v1", api_key: k}}]
    fallbacks: [backup]
  primary-dead:
    deployments: [{{provider: openai_compat, model: gpt-4o, api_base: "http://127.0.0.1:{dead}/v1", api_key: k}}]
    fallbacks: [backup]
  primary-strict:
    deployments: [{{provider: openai_compat, model: strict-primary, api_base: "{good}/v1", api_key: k}}]
    fallbacks: [backup]
  backup:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{good}/v1", api_key: k}}]
  doomed:
    deployments: [{{provider: openai_compat, model: doomed-bad, api_base: "{bad}/v1", api_key: k}}]
    fallbacks: [doomed-too]
  doomed-too:
    deployments: [{{provider: openai_compat, model: gpt-4o, api_base: "http://127.0.0.1:{dead}/v1", api_key: k}}]
  cooling:
    deployments: [{{provider: openai_compat, model: cooling-bad, api_base: "{bad}/v1", api_key: k}}]
  recovering:
    deployments: [{{provider: openai_compat, model: recovering-bad, api_base: "{bad}/v1", api_key: k}}]
  mixed:
    deployments:
      - {{provider: openai_compat, model: mixed-bad, api_base: "{bad}/v1", api_key: k, weight: 1000000}}
      - {{provider: openai_compat, model: mixed-good, api_base: "{good}/v1", api_key: k}}
  weighted:
    deployments:
      - {{provider: openai_compat, model: gpt-4o, api_base: "{good}/v1", api_key: k, weight: 3}}
      - {{provider: openai_compat, model: gpt-4o-mini, api_base: "{good}/v1", api_key: k, weight: 1}}
  limited:
    deployments: [{{provider: openai_compat, model: limited, api_base: "{good}/v1", api_key: k}}]
  limited-long:
    deployments: [{{provider: openai_compat, model: limited-long, api_base: "{good}/v1", api_key: k}}]
"""


@pytest.fixture(scope="module")
def routed(good: Recorder, bad: Recorder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    work: Path = tmp_path_factory.mktemp("routing")
    with run_gateway(
        work, CONFIG.format(good=good.url, bad=bad.url, dead=DEAD_PORT, cooldown=COOLDOWN_S)
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def key(routed: Proc) -> str:
    return team_key(routed, "routing")


@pytest.fixture(scope="module")
def sdk(routed: Proc, key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=routed.v1, api_key=key, max_retries=0, timeout=20) as client:
        yield client


def chat(sdk: openai.OpenAI, model: str, **kwargs: Any) -> tuple[str, str]:
    """(the x-tollgate-model header, the answer's model) of one successful request."""
    raw = sdk.chat.completions.with_raw_response.create(model=model, messages=HI, max_tokens=3, **kwargs)
    return raw.headers["x-tollgate-model"], raw.parse().model


def post(
    routed: Proc, key: str, model: str, sim: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """One chat request over plain HTTP; `sim` holds the simulator's x-sim-* switches."""
    body = {"model": model, "messages": HI, "max_tokens": 3}
    headers = {"authorization": f"Bearer {key}", **(sim or {})}
    return http("POST", routed.v1 + "/chat/completions", body=body, headers=headers)


# -- retries ------------------------------------------------------------------------------------


def test_every_request_succeeds_past_a_dead_deployment(sdk: openai.OpenAI) -> None:
    # The dead deployment has nearly all the weight: each request meets it first until it cools down.
    for _ in range(6):
        assert chat(sdk, "retried") == ("gpt-4o-mini", "gpt-4o-mini")


def test_a_failed_attempt_is_retried_on_another_deployment(
    sdk: openai.OpenAI, good: Recorder, bad: Recorder
) -> None:
    assert chat(sdk, "retried-counted") == ("retry-good", "retry-good")
    assert [s.status for s in bad.requests("retry-bad")] == [500]
    assert [s.status for s in good.requests("retry-good")] == [200]


def test_a_stream_that_fails_before_its_first_byte_is_retried(sdk: openai.OpenAI, good: Recorder) -> None:
    before = good.count("retry-good")
    stream = sdk.chat.completions.create(model="retried-counted", messages=HI, max_tokens=5, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text
    assert good.count("retry-good") == before + 1


def test_upstream_429_is_retried_honouring_retry_after_then_passed_on(
    routed: Proc, key: str, good: Recorder
) -> None:
    status, headers, body = post(routed, key, "limited", {"x-sim-fault": "429", "x-sim-retry-after": "0.3"})
    assert (status, headers["retry-after"], body["error"]["code"]) == (429, "1", "upstream_rate_limited")
    attempts = good.requests("limited")
    assert [s.status for s in attempts] == [429, 429, 429]  # retries: 2, so three attempts
    for earlier, later in itertools.pairwise(attempts):
        assert later.arrived - earlier.answered >= 0.3


def test_retry_after_longer_than_the_router_waits_is_passed_on_at_once(
    routed: Proc, key: str, good: Recorder
) -> None:
    started = time.monotonic()
    status, headers, body = post(
        routed, key, "limited-long", {"x-sim-fault": "429", "x-sim-retry-after": "30"}
    )
    assert time.monotonic() - started < 3
    assert (status, headers["retry-after"], body["error"]["type"]) == (429, "30", "rate_limit_error")
    assert good.count("limited-long") == 1


# -- fallbacks ----------------------------------------------------------------------------------


def test_failing_alias_falls_back(sdk: openai.OpenAI, good: Recorder, bad: Recorder) -> None:
    assert chat(sdk, "primary") == ("gpt-4o-mini", "gpt-4o-mini")
    assert bad.count("primary-bad") == 3  # every retry spent on the primary first
    # Cooling down now: the primary is skipped, the fallback answers at once.
    assert chat(sdk, "primary") == ("gpt-4o-mini", "gpt-4o-mini")
    assert bad.count("primary-bad") == 3


def test_unreachable_alias_falls_back(sdk: openai.OpenAI) -> None:
    assert chat(sdk, "primary-dead") == ("gpt-4o-mini", "gpt-4o-mini")


def test_a_request_the_upstream_rejects_does_not_fall_back(routed: Proc, key: str, good: Recorder) -> None:
    backups = good.count("gpt-4o-mini")
    status, _, body = post(routed, key, "primary-strict", {"x-sim-fault": "400"})
    assert (status, body["error"]["type"]) == (400, "invalid_request_error")
    assert body["error"]["message"].startswith("openai_compat/strict-primary: Invalid request")
    assert good.count("strict-primary") == 1
    assert good.count("gpt-4o-mini") == backups


def test_when_the_fallbacks_fail_too_the_last_failure_is_reported(
    routed: Proc, key: str, bad: Recorder
) -> None:
    status, _, body = post(routed, key, "doomed")
    assert bad.count("doomed-bad") == 3
    assert (status, body["error"]["code"]) == (503, "upstream_unavailable")
    assert body["error"]["message"].startswith(
        f"openai_compat/gpt-4o: cannot connect to http://127.0.0.1:{DEAD_PORT}/v1"
    )


# -- cooldown -----------------------------------------------------------------------------------


def test_a_deployment_that_keeps_failing_cools_down(routed: Proc, key: str, bad: Recorder) -> None:
    status, _, body = post(routed, key, "cooling")
    assert (status, body["error"]["code"]) == (502, "upstream_error")
    assert body["error"]["message"] == (
        "openai_compat/cooling-bad: The server had an error while processing your request. Sorry about that!"
    )
    assert bad.count("cooling-bad") == 3
    status, headers, body = post(routed, key, "cooling")
    assert (status, headers["retry-after"]) == (503, str(COOLDOWN_S))
    assert body == {
        "error": {
            "message": "Every deployment of 'cooling' is cooling down after repeated failures; try again shortly.",
            "type": "api_error",
            "param": None,
            "code": "upstream_unavailable",
        }
    }
    assert bad.count("cooling-bad") == 3  # not asked again while cooling


def test_a_cooling_deployment_is_skipped_for_a_healthy_one(sdk: openai.OpenAI, bad: Recorder) -> None:
    for _ in range(6):
        assert chat(sdk, "mixed") == ("mixed-good", "mixed-good")
    # Three failures (failures_before_cooldown) and no more: after that it is not picked.
    assert bad.count("mixed-bad") == 3


def test_a_deployment_is_tried_again_once_its_cooldown_is_over(routed: Proc, key: str, bad: Recorder) -> None:
    assert post(routed, key, "recovering")[0] == 502
    deadline = time.monotonic() + COOLDOWN_S + 10
    while bad.count("recovering-bad") == 3:
        assert time.monotonic() < deadline, "the deployment never left its cooldown"
        status = post(routed, key, "recovering")[0]
        assert status in (502, 503)
        time.sleep(0.1)  # poll interval: the cooldown is what's measured
    attempts = bad.requests("recovering-bad")
    assert attempts[3].arrived - attempts[2].answered >= COOLDOWN_S


# -- load balancing -----------------------------------------------------------------------------


def test_weights_split_the_traffic(sdk: openai.OpenAI) -> None:
    served = Counter(chat(sdk, "weighted")[0] for _ in range(200))
    assert set(served) == {"gpt-4o", "gpt-4o-mini"}
    # 3:1 expects 150 of 200; the bounds are five standard deviations (6.1) either side.
    assert 120 <= served["gpt-4o"] <= 180, served


# -- retry-after honoured on random faults ------------------------------------------------------

FLAKY_CONFIG = """
store: {{backend: memory}}
router: {{retries: 4, backoff_base_s: 0.01, backoff_max_s: 0.02, failures_before_cooldown: 100}}
models:
  flaky:
    deployments: [{{provider: openai_compat, model: gpt-4o, api_base: "{flaky}/v1", api_key: k}}]
"""


def test_random_429s_are_retried_after_their_retry_after(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Half the answers are 429 (the simulator's fault generator is seeded: the run is repeatable)."""
    work = tmp_path_factory.mktemp("flaky")
    with (
        run_sim(work, "--fault", "429", "--fault-rate", "0.5") as flaky_sim,
        recording(flaky_sim.url) as flaky,
        run_gateway(work, FLAKY_CONFIG.format(flaky=flaky.url)) as gateway,
        openai.OpenAI(base_url=gateway.v1, api_key=gateway.master_key, max_retries=0, timeout=20) as client,
    ):
        for _ in range(10):
            answer = client.chat.completions.create(
                model="flaky", messages=HI, max_tokens=3, extra_headers={"x-sim-retry-after": "0.2"}
            )
            assert answer.choices[0].message.content
        attempts = flaky.requests()
    statuses = Counter(s.status for s in attempts)
    assert statuses[200] == 10
    assert statuses[429] >= 3, statuses
    for earlier, later in itertools.pairwise(attempts):
        if earlier.status == 429:
            assert later.arrived - earlier.answered >= 0.2
