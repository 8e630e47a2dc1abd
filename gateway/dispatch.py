"""The pipeline's last step: from a model alias to an answer.

Resolves the alias (exact name, else the longest `prefix/*` wildcard), lets the balancer
(`gateway.balance`) pick a deployment among those not cooling down, by the alias's strategy
(weighted, least outstanding requests, latency), and calls its provider. Failures the
upstream may recover from (429, 5xx, timeouts, refused connections) are retried with
exponential backoff and full jitter, honouring retry-after; a deployment that keeps failing
cools down; when an alias is exhausted its fallbacks are tried in order. A request the
upstream rejects as malformed (4xx) is the client's to fix and is returned at once, unless
its prompt only outgrew the model's context window: then the fallbacks are tried too.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.balance import Balancer, DeploymentState, TrackedStream
from gateway.cache.controls import cache_miss, parse_controls
from gateway.config import (
    LITELLM_PROVIDERS,
    OPENAI_COMPATIBLE_BASES,
    Config,
    Deployment,
    ModelAlias,
    RouterConfig,
)
from gateway.errors import (
    ModelNotFound,
    RateLimited,
    TollgateError,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from gateway.pipeline import RequestContext
from gateway.providers.base import Provider, ProviderCall, ProviderResponse
from gateway.providers.openai_compat import CONTEXT_LENGTH_EXCEEDED

# The strategies that read a deployment's in-flight count or latency.
_TRACKING_STRATEGIES = frozenset({"least_outstanding", "latency"})


@dataclass(frozen=True, slots=True)
class Target:
    alias: str
    entry: ModelAlias
    # The part of the requested name a wildcard alias matched (`openai/*` + `gpt-4o` → `gpt-4o`).
    wildcard_rest: str | None


class Dispatcher:
    def __init__(
        self, config: Config, providers: Mapping[str, Provider], *, rng: random.Random | None = None
    ) -> None:
        self._models = config.models
        self._router: RouterConfig = config.router
        self._providers = providers
        self._rng = rng or random.Random()
        self._balancer = Balancer(config.router, self._rng)
        self._wildcards = sorted(
            ((alias[:-1], alias) for alias in config.models if alias.endswith("/*")), key=lambda p: -len(p[0])
        )

    def resolve(self, model: str) -> Target:
        entry = self._models.get(model)
        if entry is not None:
            return Target(model, entry, None)
        for prefix, alias in self._wildcards:
            if model.startswith(prefix) and len(model) > len(prefix):
                return Target(alias, self._models[alias], model[len(prefix) :])
        raise ModelNotFound(
            f"The model '{model}' does not exist or you do not have access to it.", param="model"
        )

    def candidates(self, model: str) -> list[tuple[str, Deployment]]:
        """Every (upstream model, deployment) that may serve `model`, fallbacks included:
        what a worst-case estimate must price."""
        target = self.resolve(model)
        hops = [target] + [Target(fb, self._models[fb], None) for fb in target.entry.fallbacks]
        found: list[tuple[str, Deployment]] = []
        for hop in hops:
            for deployment in hop.entry.deployments:
                upstream = (hop.wildcard_rest or model) if deployment.model == "*" else deployment.model
                found.append((upstream, deployment))
        return found

    def knows(self, model: str) -> bool:
        try:
            self.resolve(model)
        except ModelNotFound:
            return False
        return True

    def listed_models(self) -> list[str]:
        """Callable model ids for /v1/models: each alias; for a wildcard, what it is known to serve.

        `openai/*` cannot be enumerated offline and is left out; `sim/*` lists the simulator's
        catalogue.
        """
        from gateway.sim.server import MODELS as SIM_MODELS

        names: list[str] = []
        for alias, entry in self._models.items():
            if not alias.endswith("/*"):
                names.append(alias)
            elif all(dep.provider == "sim" for dep in entry.deployments):
                prefix = alias[:-1]
                names += [prefix + m.removeprefix("sim/") for m in SIM_MODELS]
        return names

    async def __call__(self, ctx: RequestContext) -> ProviderResponse:
        if ctx.request_headers and parse_controls(ctx.request_headers).only_if_cached:
            # No cache stage answered, and the client wants no model called.
            raise cache_miss()
        target = self.resolve(ctx.request.model)
        if not target.entry.fallbacks:
            return await self._try_alias(ctx, target)
        chain = [target] + [Target(fb, self._models[fb], None) for fb in target.entry.fallbacks]
        last_error: TollgateError | None = None
        for hop in chain:
            try:
                return await self._try_alias(ctx, hop)
            except UpstreamRejected as err:
                # The client's to fix, unless the prompt only outgrew this model's window.
                if not (self._router.fallback_on_context_overflow and is_context_overflow(err)):
                    raise
                last_error = err
            except (UpstreamError, RateLimited) as err:
                last_error = err
        assert last_error is not None
        raise last_error

    async def _try_alias(self, ctx: RequestContext, target: Target) -> ProviderResponse:
        router = self._router
        balancer = self._balancer
        deployments = target.entry.deployments
        strategy = target.entry.strategy or router.strategy
        stream = ctx.request.stream
        # Load and latency are tracked only where the strategy reads them, and only when there
        # is a choice to make: `weighted` and a single deployment need neither.
        tracked = len(deployments) > 1 and strategy in _TRACKING_STRATEGIES
        tried: set[int] = set()
        last_error: TollgateError | None = None
        for attempt in range(router.retries + 1):
            deployment = balancer.pick(deployments, strategy, stream=stream, tried=tried)
            if deployment is None:
                break
            tried.add(id(deployment))
            call = self._call_for(ctx, target, deployment)
            provider = self._providers[provider_kind(deployment)]
            state: DeploymentState | None = None
            if tracked:
                state = balancer.state(deployment)
                state.in_flight += 1  # before the first await: concurrent picks see it
            started = time.perf_counter() if tracked else 0.0
            try:
                response = await provider.send(call, deployment)
            except BaseException as err:
                if state is not None:
                    state.in_flight -= 1
                if isinstance(err, UpstreamRejected) or not isinstance(err, UpstreamError | RateLimited):
                    raise
                last_error = err
                balancer.failed(deployment)
                if state is not None:
                    balancer.observe_failure(state, time.perf_counter() - started, stream=stream)
                retry_after = getattr(err, "retry_after_s", None)
                if attempt == router.retries or (retry_after or 0) > router.max_retry_after_s:
                    break
                await asyncio.sleep(self._backoff(attempt, retry_after))
                continue
            balancer.succeeded(deployment)
            if state is not None:
                if response.stream is None:
                    state.in_flight -= 1
                    balancer.observe(state, time.perf_counter() - started, stream=False)
                else:
                    response.stream = TrackedStream(response.stream, balancer, state, started)
            ctx.deployment = deployment
            ctx.served_by = f"{target.alias}#{deployments.index(deployment)}"
            ctx.served_model = str(call.body.get("model"))
            return response
        if last_error is None:
            raise UpstreamUnavailable(
                f"Every deployment of '{target.alias}' is cooling down after repeated failures; try again shortly.",
                headers={"retry-after": str(max(1, round(router.cooldown_s)))},
            )
        raise last_error

    def _call_for(self, ctx: RequestContext, target: Target, deployment: Deployment) -> ProviderCall:
        request = ctx.request
        upstream_model = target.wildcard_rest if deployment.model == "*" else deployment.model
        if upstream_model is None:
            upstream_model = request.model
        if upstream_model == request.model:
            body, raw = request.body, request.raw
        else:
            body, raw = {**request.body, "model": upstream_model}, None
        return ProviderCall(
            endpoint=request.endpoint,
            body=body,
            stream=request.stream,
            headers=ctx.client_headers,
            raw_body=raw,
            tenant=ctx.team,
        )

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self._router.backoff_max_s, self._router.backoff_base_s * (2**attempt))
        delay = self._rng.uniform(0, ceiling)
        return max(delay, retry_after or 0.0)


def is_context_overflow(err: UpstreamRejected) -> bool:
    """The upstream refused the request only because it is too long for the model: the
    providers classify that refusal as `context_length_exceeded`."""
    return err.code == CONTEXT_LENGTH_EXCEEDED


def provider_kind(deployment: Deployment) -> str:
    if deployment.provider == "sim":
        return "sim"
    if deployment.provider in OPENAI_COMPATIBLE_BASES:
        return "openai_compat"
    assert deployment.provider in LITELLM_PROVIDERS
    return "litellm"
