"""The balancer's strategies, decided with a seeded generator so each run picks the same."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.balance import Balancer, DeploymentState, TrackedStream
from gateway.config import Deployment, RouterConfig
from gateway.providers.base import SSEStream


def deployments(*weights: float) -> list[Deployment]:
    return [Deployment(provider="sim", model=f"m{i}", weight=w) for i, w in enumerate(weights)]


def balancer(**router: object) -> Balancer:
    return Balancer(RouterConfig.model_validate(router), random.Random(7))


def names(picks: list[Deployment | None]) -> Counter[str]:
    return Counter(d.model if d else "none" for d in picks)


def test_weighted_splits_by_weight() -> None:
    b, deps = balancer(), deployments(3, 1)
    served = names([b.pick(deps, "weighted") for _ in range(4000)])
    assert 2850 <= served["m0"] <= 3150, served  # 3000 expected; five standard deviations


def test_a_single_deployment_is_picked_without_a_draw() -> None:
    rng = random.Random(1)
    b, deps = Balancer(RouterConfig(), rng), deployments(1)
    state = rng.getstate()
    assert b.pick(deps, "latency") is deps[0]
    assert rng.getstate() == state


def test_least_outstanding_picks_the_idlest() -> None:
    b, deps = balancer(), deployments(1, 1, 1)
    b.state(deps[0]).in_flight = 2
    b.state(deps[1]).in_flight = 1
    b.state(deps[2]).in_flight = 3
    assert set(names([b.pick(deps, "least_outstanding") for _ in range(50)])) == {"m1"}


def test_least_outstanding_breaks_ties_by_weight() -> None:
    b, deps = balancer(), deployments(9, 1, 5)
    b.state(deps[2]).in_flight = 1
    served = names([b.pick(deps, "least_outstanding") for _ in range(2000)])
    assert set(served) == {"m0", "m1"}
    assert 1700 <= served["m0"] <= 1900, served  # 1800 expected


def test_least_outstanding_spreads_a_concurrent_burst() -> None:
    b, deps = balancer(), deployments(1, 1, 1)
    for _ in range(9):  # each pick is in flight when the next is made
        b.state(b.pick(deps, "least_outstanding") or deps[0]).in_flight += 1
    assert [b.state(d).in_flight for d in deps] == [3, 3, 3]


def test_latency_tries_every_unmeasured_deployment_first() -> None:
    b, deps = balancer(), deployments(1, 1)
    b.observe(b.state(deps[0]), 0.01, stream=False)
    assert b.pick(deps, "latency") is deps[1]
    # Streams are measured apart: to the first byte.
    b.observe(b.state(deps[1]), 0.5, stream=True)
    assert b.pick(deps, "latency", stream=True) is deps[0]


def test_latency_prefers_the_fastest_and_explores_a_little() -> None:
    b, deps = balancer(latency_exploration=0.1), deployments(1, 1)
    b.observe(b.state(deps[0]), 0.200, stream=False)
    b.observe(b.state(deps[1]), 0.050, stream=False)
    served = names([b.pick(deps, "latency") for _ in range(2000)])
    assert 140 <= served["m0"] <= 260, served  # 200 expected (10%)


def test_latency_without_exploration_always_takes_the_fastest() -> None:
    b, deps = balancer(latency_exploration=0), deployments(1, 1)
    b.observe(b.state(deps[0]), 0.2, stream=False)
    b.observe(b.state(deps[1]), 0.05, stream=False)
    assert set(names([b.pick(deps, "latency") for _ in range(200)])) == {"m1"}


def test_the_moving_average_follows_a_deployment_that_recovers() -> None:
    b, deps = balancer(latency_smoothing=0.5, latency_exploration=0), deployments(1, 1)
    slow, fast = b.state(deps[0]), b.state(deps[1])
    b.observe(slow, 1.0, stream=False)
    b.observe(fast, 0.1, stream=False)
    assert b.pick(deps, "latency") is deps[1]
    for _ in range(6):  # what exploration would measure once the first one got fast
        b.observe(slow, 0.02, stream=False)
    assert slow.response_s == pytest.approx(0.02 + 0.98 / 64)
    assert b.pick(deps, "latency") is deps[0]


def test_a_failure_counts_as_at_least_twice_the_average() -> None:
    b = balancer(latency_smoothing=0.5)
    state = DeploymentState()
    b.observe_failure(state, 0.001, stream=False)
    assert state.response_s == 0.0  # nothing to double yet: the first real sample decides
    b.observe(state, 0.1, stream=False)
    b.observe_failure(state, 0.001, stream=False)
    assert state.response_s == pytest.approx(0.15)


@pytest.mark.parametrize("strategy", ["weighted", "least_outstanding", "latency"])
def test_every_strategy_skips_a_deployment_cooling_down(strategy: str) -> None:
    b, deps = balancer(failures_before_cooldown=2, cooldown_s=60), deployments(1000, 1)
    b.observe(b.state(deps[0]), 0.001, stream=False)
    b.observe(b.state(deps[1]), 0.5, stream=False)
    b.failed(deps[0])
    assert b.state(deps[0]).cooling_until == 0.0
    b.failed(deps[0])
    assert set(names([b.pick(deps, strategy) for _ in range(50)])) == {"m1"}  # type: ignore[arg-type]
    b.failed(deps[1])
    b.failed(deps[1])
    assert b.pick(deps, strategy) is None  # type: ignore[arg-type]


def test_a_success_resets_the_failure_streak() -> None:
    b, deps = balancer(failures_before_cooldown=2), deployments(1)
    b.failed(deps[0])
    b.succeeded(deps[0])
    b.failed(deps[0])
    assert b.pick(deps, "weighted") is deps[0]


def test_a_deployment_already_failed_on_is_avoided_while_another_is_left() -> None:
    b, deps = balancer(), deployments(1000, 1)
    assert b.pick(deps, "weighted", tried={id(deps[0])}) is deps[1]
    assert b.pick(deps, "weighted", tried={id(deps[0]), id(deps[1])}) is not None


# -- the tracked stream --------------------------------------------------------------------------


async def _source(chunks: list[bytes], fail: bool = False):  # type: ignore[no-untyped-def]
    for chunk in chunks:
        yield chunk
    if fail:
        raise RuntimeError("cut off")


def _tracked(chunks: list[bytes], fail: bool = False) -> tuple[TrackedStream, DeploymentState]:
    b = balancer()
    state = DeploymentState(in_flight=1)
    stream = TrackedStream(SSEStream(_source(chunks, fail)), b, state, started=1e-9)
    return stream, state


@pytest.mark.anyio
async def test_a_stream_read_to_its_end_releases_once_and_measures_its_first_byte() -> None:
    stream, state = _tracked([b"data: 1\n\n", b"data: 2\n\n"])
    assert [c async for c in stream] == [b"data: 1\n\n", b"data: 2\n\n"]
    assert state.in_flight == 0
    assert state.first_byte_s > 0
    await stream.aclose()
    assert state.in_flight == 0
    assert stream.seen == [b"data: 1\n\n", b"data: 2\n\n"]  # accounting reads the source's


@pytest.mark.anyio
async def test_a_stream_closed_early_releases() -> None:
    stream, state = _tracked([b"data: 1\n\n", b"data: 2\n\n"])
    async for _ in stream:
        break
    assert state.in_flight == 1
    await stream.aclose()
    assert state.in_flight == 0


@pytest.mark.anyio
async def test_a_stream_that_breaks_releases() -> None:
    stream, state = _tracked([b"data: 1\n\n"], fail=True)
    with pytest.raises(RuntimeError):
        async for _ in stream:
            pass
    assert state.in_flight == 0
    await stream.aclose()
    assert state.in_flight == 0


@pytest.mark.anyio
async def test_a_stream_never_read_but_closed_releases() -> None:
    stream, state = _tracked([b"data: 1\n\n"])
    await stream.aclose()
    assert state.in_flight == 0
    assert state.first_byte_s == 0.0
