"""Route: a request to a routed alias goes to the cheapest candidate that is good enough.

A routed alias (`models.<alias>.route`, docs/routing.md) lists candidate aliases from the
strongest to the weakest. The first rule that applies decides:

1. the client's `x-tollgate-route: strong | weak` header;
2. a request that needs the strongest model: tools, a JSON schema to follow, a prompt longer
   than `long_prompt_tokens`;
3. the team's policy (`stages.route.prefer: strong | weak`);
4. the learned router (`route.router`, trained with `tollgate router train`): the weakest
   candidate when its score clears the threshold calibrated for the quality target (the
   alias's `target`, or the team's `stages.route.target`); a request with no text question
   to judge goes to the strongest;
5. otherwise the strongest.

A request naming a concrete model is never rerouted. The chosen candidate is served with its
own deployments and fallbacks; `x-tollgate-model` and the response's `model` say which model
answered, `x-tollgate-route` which candidate and why. When a weaker candidate serves, the
difference from the strongest candidate's price (the baseline) is this stage's saving.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.accounting.tokens import count_prompt
from gateway.cache.keys import last_user_text
from gateway.config import Config, RouteSpec
from gateway.errors import header_choice
from gateway.pipeline import CallNext, RequestContext
from gateway.providers.base import ProviderResponse
from gateway.stages.team_settings import TeamOverrides

if TYPE_CHECKING:
    from gateway.routing import Router  # a trained router: is the weak candidate good enough?

log = logging.getLogger("tollgate.route")

ROUTE_HEADER = "x-tollgate-route"
_CHOICES = ("strong", "weak", "auto")


class TeamSettings(BaseModel):
    """A team's `stages.route` in its policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefer: Literal["strong", "weak", "auto"] | None = None
    target: float | None = Field(default=None, gt=0, le=1)


@dataclass(frozen=True, slots=True)
class _Preferences:
    prefer: str | None = None
    target: float | None = None


@dataclass(frozen=True, slots=True)
class _Route:
    alias: str
    spec: RouteSpec
    router: Router | None


class RouteStage:
    name: ClassVar[str] = "route"

    def __init__(self, config: Config, routers: Mapping[str, Router]) -> None:
        self._routes = {
            alias: _Route(alias, entry.route, routers.get(entry.route.router or ""))
            for alias, entry in config.models.items()
            if entry.route is not None
        }
        self._overrides = TeamOverrides(self.name, TeamSettings, _Preferences(), logger=log)

    async def __call__(self, ctx: RequestContext, call_next: CallNext) -> ProviderResponse:
        route = self._routes.get(ctx.request.model)
        if route is None:
            return await call_next(ctx)
        settings = self._overrides.resolve(ctx.team, ctx.stage_settings)
        choice, reason, score = self._choose(route, ctx, settings)
        candidates = route.spec.candidates
        chosen = candidates[0] if choice == "strong" else candidates[-1]
        ctx.request = ctx.request.replace(body={**ctx.request.body, "model": chosen})
        ctx.response_headers[ROUTE_HEADER] = f"{chosen}; reason={reason}"
        detail: dict[str, Any] = {"alias": route.alias, "to": chosen, "reason": reason}
        if score is not None:
            detail["score"] = round(score, 4)
        # A weaker candidate's saving is this stage's: the baseline is the strongest's price.
        ctx.record(self.name, owns_remainder=chosen != candidates[0], detail=detail)
        return await call_next(ctx)

    def _choose(
        self, route: _Route, ctx: RequestContext, settings: _Preferences
    ) -> tuple[str, str, float | None]:
        """("strong" | "weak", the reason, the router's score if it was asked)."""
        asked = ctx.request_headers.get(ROUTE_HEADER) if ctx.request_headers else None
        if asked is not None:
            wanted = header_choice(ROUTE_HEADER, asked, _CHOICES)
            if wanted != "auto":
                return wanted, "header", None
        body = ctx.request.body
        if body.get("tools") or body.get("functions"):
            return "strong", "tools", None
        response_format = body.get("response_format")
        if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
            return "strong", "response_format", None
        limit = route.spec.long_prompt_tokens
        if limit is not None and count_prompt(ctx.request.endpoint, route.spec.candidates[0], body) > limit:
            return "strong", "long_prompt", None
        if settings.prefer in ("strong", "weak"):
            return settings.prefer, "policy", None
        if route.router is None:
            return "strong", "no_router", None
        text = last_user_text(ctx.request)
        if not text or not text.strip():
            return "strong", "no_question", None
        target = settings.target if settings.target is not None else route.spec.target
        # A linear model over cheap features: ~0.3 ms, inline (bench/router_eval.py).
        verdict = route.router.decide(text, target)
        return ("strong" if verdict.use_strong else "weak"), "router", float(verdict.score)


