"""Which deployment of an alias serves the next attempt, and what each one has shown so far.

Every deployment has one `DeploymentState`: its failure streak and cooldown (all strategies),
the requests it has in flight on this instance, and moving averages of how long it takes.
A pick is one pass over the alias's deployments: those cooling down are skipped, those this
request already failed on are avoided while another is left, and the strategy chooses among
the rest:

- `weighted`: at random, in proportion to `weight`.
- `least_outstanding`: the fewest requests in flight; ties by weight, at random.
- `latency`: the lowest moving average of time to first byte (streams) or to the whole
  answer (the rest); a deployment with no sample yet is tried first, and a share
  (`latency_exploration`) of picks goes to another one, so a deployment that got faster is seen.

State is plain attributes changed between awaits on one event loop: no locks are needed.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.config import Deployment, RouterConfig, Strategy
from gateway.providers.base import StreamWrapper

if TYPE_CHECKING:
    from gateway.providers.base import ResponseStream

_NOTHING_TRIED: frozenset[int] = frozenset()


@dataclass(slots=True)
class DeploymentState:
    consecutive_failures: int = 0
    cooling_until: float = 0.0
    in_flight: int = 0
    # Moving averages in seconds; 0.0 means no sample yet.
    first_byte_s: float = 0.0
    response_s: float = 0.0

    def latency(self, stream: bool) -> float:
        return self.first_byte_s if stream else self.response_s


class Balancer:
    """Health, load and latency of every deployment; picks one for each attempt."""

    def __init__(self, router: RouterConfig, rng: random.Random) -> None:
        self._router = router
        self._rng = rng
        self._smoothing = router.latency_smoothing
        self._states: dict[int, DeploymentState] = {}

    def state(self, deployment: Deployment) -> DeploymentState:
        # Keyed by identity: the config is frozen and lives as long as the balancer, and two
        # aliases with equal deployments still keep separate health.
        state = self._states.get(id(deployment))
        if state is None:
            state = self._states[id(deployment)] = DeploymentState()
        return state

    def pick(
        self,
        deployments: Sequence[Deployment],
        strategy: Strategy,
        *,
        stream: bool = False,
        tried: frozenset[int] | set[int] = _NOTHING_TRIED,
    ) -> Deployment | None:
        """A deployment not cooling down, or None when every one is."""
        now = time.monotonic()
        if len(deployments) == 1:
            only = deployments[0]
            return only if self.state(only).cooling_until <= now else None
        healthy = [d for d in deployments if self.state(d).cooling_until <= now]
        # Prefer a deployment this request has not failed on yet; reuse one only if none is left.
        fresh = [d for d in healthy if id(d) not in tried] if tried else healthy
        if not fresh:
            fresh = healthy
            if not fresh:
                return None
        if len(fresh) == 1:
            return fresh[0]
        if strategy == "least_outstanding":
            return self._least_outstanding(fresh)
        if strategy == "latency":
            return self._fastest(fresh, stream)
        return self._weighted(fresh)

    def _weighted(self, deployments: Sequence[Deployment]) -> Deployment:
        total = 0.0
        for deployment in deployments:
            total += deployment.weight
        point = self._rng.random() * total
        for deployment in deployments:
            point -= deployment.weight
            if point < 0:
                return deployment
        return deployments[-1]  # rounding left `point` at exactly zero

    def _least_outstanding(self, deployments: list[Deployment]) -> Deployment:
        fewest = min(self.state(d).in_flight for d in deployments)
        idle = [d for d in deployments if self.state(d).in_flight == fewest]
        return idle[0] if len(idle) == 1 else self._weighted(idle)

    def _fastest(self, deployments: list[Deployment], stream: bool) -> Deployment:
        unmeasured = [d for d in deployments if self.state(d).latency(stream) == 0.0]
        if unmeasured:
            return unmeasured[0] if len(unmeasured) == 1 else self._weighted(unmeasured)
        best = min(deployments, key=lambda d: self.state(d).latency(stream))
        if self._rng.random() < self._router.latency_exploration:
            return self._weighted([d for d in deployments if d is not best])
        return best

    # -- what happened ------------------------------------------------------------------------
    def failed(self, deployment: Deployment) -> None:
        state = self.state(deployment)
        state.consecutive_failures += 1
        if state.consecutive_failures >= self._router.failures_before_cooldown:
            state.cooling_until = time.monotonic() + self._router.cooldown_s
            state.consecutive_failures = 0

    def succeeded(self, deployment: Deployment) -> None:
        state = self._states.get(id(deployment))
        if state is not None:
            state.consecutive_failures = 0

    def observe(self, state: DeploymentState, seconds: float, *, stream: bool) -> None:
        """One latency sample; a failed attempt is recorded too, at least twice the average,
        so a deployment that fails fast does not look fast."""
        alpha = self._smoothing
        if stream:
            average = state.first_byte_s
            state.first_byte_s = seconds if average == 0.0 else average + alpha * (seconds - average)
        else:
            average = state.response_s
            state.response_s = seconds if average == 0.0 else average + alpha * (seconds - average)

    def observe_failure(self, state: DeploymentState, seconds: float, *, stream: bool) -> None:
        average = state.latency(stream)
        if average:
            self.observe(state, max(seconds, 2 * average), stream=stream)


class TrackedStream(StreamWrapper):
    """A ResponseStream that tells the balancer when its first byte came and when it ended.

    The in-flight count is released exactly once: at the end of iteration, on an error from
    the source, or on `aclose` (the server closes every stream it sent, a client hang-up included).
    """

    __slots__ = ("_balancer", "_iterator", "_started", "_state")

    def __init__(
        self, source: ResponseStream, balancer: Balancer, state: DeploymentState, started: float
    ) -> None:
        super().__init__(source)
        self._balancer: Balancer | None = balancer
        self._state = state
        self._started = started
        self._iterator: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._iterator is None:
            self._iterator = aiter(self._source)
        return self

    async def __anext__(self) -> bytes:
        if self._iterator is None:
            self._iterator = aiter(self._source)
        try:
            data = await anext(self._iterator)
        except BaseException:
            self._release()
            raise
        if self._own_seen is not None:
            self._own_seen.append(data)
        if self._started:
            self._balancer_observe()
        return data

    def _balancer_observe(self) -> None:
        balancer = self._balancer
        if balancer is not None:
            balancer.observe(self._state, time.perf_counter() - self._started, stream=True)
        self._started = 0.0

    def _release(self) -> None:
        if self._balancer is not None:
            self._state.in_flight -= 1
            self._balancer = None

    async def aclose(self) -> None:
        self._release()
        await super().aclose()
