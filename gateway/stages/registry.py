"""The explicit registry of stages: which exist, and how each is built from config.

A stage that is switched off is left out of the chain (the do-nothing object is the
absence of a link), so the gateway with every stage off is a plain proxy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.accounting.prices import PriceTable
from gateway.cache.versions import AnswerVersions
from gateway.config import Config, ConfigError
from gateway.dispatch import Dispatcher
from gateway.keys import KeyRing
from gateway.pipeline import CANONICAL_ORDER, RequestContext, Stage
from gateway.stages.auth import AuthStage
from gateway.stages.compress import CompressStage
from gateway.stages.exact_cache import ExactCacheStage
from gateway.stages.policy import PolicyStage
from gateway.stages.policy_source import PolicySource, file_from_env
from gateway.stages.route import RouteStage
from gateway.stages.semantic_cache import SemanticCacheStage
from gateway.store.base import Store


@dataclass(frozen=True, slots=True)
class StageDeps:
    """What the runtime hands to stage factories; a stage takes only what it needs."""

    store: Store
    keys: KeyRing
    dispatcher: Dispatcher
    prices: PriceTable
    # Where a stage reports an alert for traces and metrics (gateway.telemetry).
    on_alert: Callable[[RequestContext, Any], None] | None = None


StageFactory = Callable[[Config, StageDeps], Stage | None]


def _auth(config: Config, deps: StageDeps) -> Stage | None:
    if not config.stages.auth.enabled:
        return None
    return AuthStage(config.stages.auth, deps.keys, config.server.master_key)


def _policy(config: Config, deps: StageDeps) -> Stage | None:
    settings = config.stages.policy
    if not settings.enabled:
        return None
    source = PolicySource(
        deps.store, file_from_env(settings.file), reload_interval_s=settings.reload_interval_s
    )
    defer = config.stages.defer
    return PolicyStage(
        settings, source, deps.store, deps.dispatcher, deps.prices, on_alert=deps.on_alert,
        defer_after_s=defer.default_deadline_s if defer.enabled else None,
    )  # fmt: skip


def _exact_cache(config: Config, deps: StageDeps) -> Stage | None:
    if not config.stages.exact_cache.enabled:
        return None
    return ExactCacheStage(config, deps.store, deps.dispatcher)


def _compress(config: Config, deps: StageDeps) -> Stage | None:
    settings = config.stages.compress
    if not settings.enabled:
        return None
    return CompressStage(settings)


def _context(config: Config, deps: StageDeps) -> Stage | None:
    settings = config.stages.context
    if not settings.enabled:
        return None
    summary_model = settings.history.summary_model
    if settings.history.active and summary_model and not deps.dispatcher.knows(summary_model):
        raise ConfigError(f"stages.context.history.summary_model: unknown model alias {summary_model!r}")
    from gateway.stages.context import ContextStage, load_tool_embedder  # embedders load only when used

    embedder = load_tool_embedder(settings.tool_selection) if settings.tool_selection.enabled else None
    return ContextStage(settings, deps.store, deps.dispatcher, deps.prices, embedder)


def _semantic_cache(config: Config, deps: StageDeps) -> Stage | None:
    settings = config.stages.semantic_cache
    if not settings.enabled:
        return None
    from gateway.semantic.embedder import shared_embedder  # onnxruntime loads only when used

    versions = AnswerVersions(config, deps.dispatcher, stage="semantic_cache")
    return SemanticCacheStage(settings, deps.store, versions, shared_embedder(settings.backend, settings.model))


def _route(config: Config, deps: StageDeps) -> Stage | None:
    if not config.stages.route.enabled or not any(m.route for m in config.models.values()):
        return None
    paths = {m.route.router for m in config.models.values() if m.route is not None and m.route.router}
    routers = {}
    if paths:
        from gateway.routing import Router  # numpy and the word-piece table load only when used

        routers = {path: Router.load(path) for path in paths}
    return RouteStage(config, routers)


def _defer(config: Config, deps: StageDeps) -> Stage | None:
    if not config.stages.defer.enabled:
        return None
    from gateway.batch.jobs import Jobs
    from gateway.stages.defer import DeferStage

    return DeferStage(config.stages.defer, Jobs(deps.store), deps.dispatcher)


# name -> factory, one entry per stage module; a factory returns None when its stage is off.
REGISTRY: dict[str, StageFactory] = {
    "auth": _auth,
    "policy": _policy,
    "exact_cache": _exact_cache,
    "context": _context,
    "compress": _compress,
    "semantic_cache": _semantic_cache,
    "route": _route,
    "defer": _defer,
}


def build_stages(config: Config, deps: StageDeps) -> list[Stage]:
    stages = [
        stage for name in CANONICAL_ORDER if name in REGISTRY if (stage := REGISTRY[name](config, deps))
    ]
    return stages
