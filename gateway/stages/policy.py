"""Policy: a team's budgets, rate limits and model rules, held exactly under concurrency.

Before the call the stage estimates the request's worst case (its prompt counted, its
maximum output, at the dearest price any deployment or fallback of the alias could charge)
and reserves it atomically against every budget and rate window that applies (the store's
`reserve`: one Lua script on Redis, one transaction on SQLite, so N instances share exact
counters). When the request settles, whatever its exit, the reservation is trued up to the
real cost and tokens, and its concurrency lease released. A breach blocks (an OpenAI-style
error naming the policy and when it resets), downgrades to a cheaper alias (the saving is
this stage's), or defers: the request waits for a provider batch (`gateway.batch`) and its
cost is charged when its result is, at batch prices.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import aiohttp
import orjson

from gateway.accounting.price_map import max_output_tokens
from gateway.accounting.prices import PriceTable
from gateway.accounting.tokens import count_prompt, encoding_name
from gateway.batch.jobs import Deferral
from gateway.config import PolicyStageConfig
from gateway.dispatch import Dispatcher
from gateway.errors import BudgetExceeded, ModelNotAllowed, RateLimited, TollgateError
from gateway.pipeline import CallNext, Request, RequestContext
from gateway.providers.base import ProviderResponse, Usage
from gateway.stages.policy_source import PolicySource
from gateway.store.base import CounterLimit, LeaseLimit, Store
from policies import (
    Alert,
    Decision,
    Estimate,
    Facts,
    Outcome,
    Plan,
    decide,
    plan,
    replan_for_downgrade,
    usd_to_nano,
)

log = logging.getLogger("tollgate.policy")

# A `total` budget never resets; its bucket is kept for a century.
_FOREVER_S = 100 * 365 * 86400
_SETTLE_RETRIES = 5


class PolicyStage:
    name: ClassVar[str] = "policy"

    def __init__(
        self,
        config: PolicyStageConfig,
        source: PolicySource,
        store: Store,
        dispatcher: Dispatcher,
        prices: PriceTable,
        *,
        on_alert: Callable[[RequestContext, Alert], None] | None = None,
        defer_after_s: float | None = None,
    ) -> None:
        self._config = config
        # A budget whose action is `defer` sends the request to the batch path, with this
        # long to finish; None: the defer stage is off, so such a breach is refused.
        self._defer_after_s = defer_after_s
        self.source = source
        self._store = store
        self._dispatcher = dispatcher
        self._prices = prices
        self._on_alert = on_alert
        self._pending: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, ctx: RequestContext, call_next: CallNext) -> ProviderResponse:
        policies = await self.source.current()
        team_policy = policies.for_team(ctx.team)
        if team_policy is None:
            return await call_next(ctx)
        if team_policy.stages:
            ctx.stage_settings = team_policy.stages
        facts = Facts(
            team=ctx.team,
            model=ctx.request.model,
            now=datetime.now(UTC),
            key_id=ctx.principal.key_id if ctx.principal else None,
            user=ctx.end_user,
            request_id=ctx.request_id,
        )
        # Prompt tokens by encoding, counted once for this request and reused on every downgrade step.
        counted: dict[str, int] = {}
        estimate = self.estimate(ctx.request, ctx.request.model, counted)
        planned = plan(policies, facts, estimate, lease_ttl_s=self._config.lease_ttl_s)
        decision = await self._reserve(planned)
        original_model = ctx.request.model
        while decision.action == "downgrade" and decision.downgrade_to is not None:
            estimate = self.estimate(ctx.request, decision.downgrade_to, counted)
            planned = replan_for_downgrade(
                policies, planned, decision, estimate, lease_ttl_s=self._config.lease_ttl_s
            )
            decision = await self._reserve(planned)
        if decision.action == "defer" and self._defer_after_s is not None:
            # Nothing is reserved: the budget is spent. The batch result is charged to it
            # when costed (the holds, at amount 0), so spending stays counted.
            reason = f"budget {decision.policy}"
            if ctx.deferral is not None:  # already deferred (a batch file's line): now it must be
                ctx.deferral = dataclasses.replace(ctx.deferral, reason=reason, required=True)
            else:
                ctx.deferral = Deferral(
                    deadline=facts.now.timestamp() + self._defer_after_s, reason=reason, required=True
                )
            ctx.holds = [(limit.charge_key, limit.kind, 0, float(limit.ttl_s or _FOREVER_S))
                         for limit in planned.limits if limit.kind in ("usd", "tokens")]  # fmt: skip
            return await call_next(ctx)
        if decision.action != "allow":
            raise _refusal(decision, facts.now)
        # From here the reservation is held: settling (on every exit) gives it back or trues it up.
        ctx.on_settle.append(lambda report: self._settle_later(planned, report))
        ctx.holds = [(limit.charge_key, limit.kind, limit.amount, float(limit.ttl_s or _FOREVER_S))
                     for limit in planned.limits if limit.kind in ("usd", "tokens")]  # fmt: skip
        for alert in decision.alerts:
            self._alert(ctx, alert)
        if planned.downgraded_from is not None:
            ctx.request = ctx.request.replace(body={**ctx.request.body, "model": planned.facts.model})
            ctx.response_headers["x-tollgate-downgraded-from"] = original_model
            ctx.record(
                self.name,
                owns_remainder=True,
                detail={"downgraded_from": original_model, "to": planned.facts.model},
            )
        return await call_next(ctx)

    # --- estimate -------------------------------------------------------------------------

    def estimate(self, request: Request, model: str, counted: dict[str, int] | None = None) -> Estimate:
        """The worst this request can cost on `model`: every input token and the maximum
        output, at the dearest rates among the deployments and fallbacks that may serve it.

        `counted` holds the prompt's token count per encoding, filled and reused across calls
        for the same request.
        """
        try:
            candidates = self._dispatcher.candidates(model)
        except TollgateError:
            candidates = []
        # Each upstream bills the prompt with its own tokenizer, which the alias's name may not
        # imply; the names share a couple of encodings, so the prompt is counted once per encoding.
        counted = {} if counted is None else counted
        names = {request.model, *(upstream for upstream, _ in candidates)}
        for encoding, name in {encoding_name(name): name for name in names}.items():
            if encoding not in counted:
                counted[encoding] = count_prompt(request.endpoint, name, request.body)
        prompt = max(counted[encoding_name(name)] for name in names)
        output = 0
        if request.endpoint != "embeddings":
            output = (
                _requested_max(request.body)
                or max(
                    (max_output_tokens(upstream) or 0 for upstream, _ in candidates),
                    default=0,
                )
                or self._config.default_max_output_tokens
            )
            output *= max(1, _int(request.body.get("n")) or 1)
        usage = Usage(prompt_tokens=prompt, completion_tokens=output)
        worst = Decimal(0)
        for upstream, deployment in candidates:
            cost = self._prices.cost(upstream, usage, override=deployment.effective_price())
            if cost is not None:
                worst = max(worst, cost)
        return Estimate(cost_nano=usd_to_nano(worst), tokens=prompt + output)

    # --- the store ------------------------------------------------------------------------

    async def _reserve(self, planned: Plan) -> Decision:
        if planned.denied is not None or not (planned.limits or planned.leases):
            return decide(planned, None)
        counters = [
            CounterLimit(
                name=limit.name,
                buckets=limit.buckets,
                charge_key=limit.charge_key,
                amount=limit.amount,
                limit=limit.limit,
                ttl_s=float(limit.ttl_s or _FOREVER_S),
            )
            for limit in planned.limits
        ]
        leases = [
            LeaseLimit(
                name=lease.name,
                key=lease.key,
                holder=lease.holder,
                limit=lease.limit if lease.limit is not None else 1 << 62,
                ttl_s=float(lease.ttl_s),
            )
            for lease in planned.leases
        ]
        reservation = await self._store.reserve(counters, leases)
        usage = {limit.name: value for limit, value in zip(planned.limits, reservation.usage, strict=True)}
        usage.update(
            {lease.name: value for lease, value in zip(planned.leases, reservation.leases, strict=True)}
        )
        return decide(planned, Outcome(admitted=reservation.admitted, failed=reservation.failed, usage=usage))

    def _settle_later(self, held: Plan, report: Any) -> None:
        self._spawn(self._settle(held, report))

    async def _settle(self, held: Plan, report: Any) -> None:
        """True the reservation up to what the request really cost and used."""
        leases = [(lease.key, lease.holder) for lease in held.leases]
        if report.held:
            # Deferred: the reservation stays until the batch result is costed (ctx.holds).
            await self._release(leases, [])
            return
        cost: Decimal | None = report.cost_usd
        usage = report.usage
        tokens = usage.total_tokens if usage is not None else 0
        charges: list[tuple[str, int, float]] = []
        for limit in held.limits:
            if limit.kind == "usd" and cost is not None:
                # An unknown price keeps the worst case reserved: never under-count a budget.
                delta = usd_to_nano(cost) - limit.amount
            elif limit.kind == "tokens":
                delta = tokens - limit.amount
            else:
                continue
            if delta:
                charges.append((limit.charge_key, delta, float(limit.ttl_s or _FOREVER_S)))
        await self._release(leases, charges)

    async def _release(self, leases: list[tuple[str, str]], charges: list[tuple[str, int, float]]) -> None:
        for attempt in range(_SETTLE_RETRIES):
            try:
                # The slot first: a client that sends its next request as soon as this one
                # answers must find it free.
                if leases:
                    await self._store.release(leases)
                    leases = []
                if charges:
                    await self._store.adjust(charges)
                return
            except Exception as err:
                log.warning(
                    "settling a reservation failed; retrying", extra={"error": str(err), "attempt": attempt}
                )
                await asyncio.sleep(0.2 * 2**attempt)
        # The worst case stays charged (budgets err on the safe side) and the lease expires by itself.
        log.error(
            "a reservation could not be settled; its worst case stays charged", extra={"charges": charges}
        )

    # --- alerts ---------------------------------------------------------------------------

    def _alert(self, ctx: RequestContext, alert: Alert) -> None:
        log.warning(
            "policy threshold crossed",
            extra={"event": "policy.threshold", "team": ctx.team, "policy": alert.policy,
                   "fraction": str(alert.fraction), "usage": alert.usage, "cap": alert.cap, "alert": alert.message},
        )  # fmt: skip
        if self._on_alert is not None:
            self._on_alert(ctx, alert)
        if self._config.alert_webhook:
            payload = {"event": "policy.threshold", "team": ctx.team, "policy": alert.policy, "kind": alert.kind,
                       "fraction": float(alert.fraction), "usage": alert.usage, "cap": alert.cap,
                       "message": alert.message, "request_id": ctx.request_id}  # fmt: skip
            self._spawn(self._post(self._config.alert_webhook, payload))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run off the response path, held until done so `aclose` can wait for it."""
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._session.post(
                url, data=orjson.dumps(payload), headers={"content-type": "application/json"}
            ) as resp:
                if resp.status >= 400:
                    log.warning("alert webhook refused", extra={"url": url, "status": resp.status})
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning("alert webhook failed", extra={"url": url, "error": str(err)})

    async def start(self) -> None:
        """Load the policies before the first request, so none is admitted unchecked."""
        await self.source.reload()

    async def aclose(self) -> None:
        """Let settlements in flight finish, so no reservation is left charged at its worst case."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=10)
        if self._session is not None:
            await self._session.close()


def _refusal(decision: Decision, now: datetime) -> TollgateError:
    message = " ".join(decision.reasons) or "Refused by policy."
    policy = decision.policy or ""
    if decision.action == "defer":
        message += " Deferral to the batch path is switched off on this gateway (stages.defer)."
    if policy.endswith("/models"):
        return ModelNotAllowed(message, param="model")
    retry_after = None if decision.resets_at is None else max(0.0, (decision.resets_at - now).total_seconds())
    if "/rate:" in policy:
        return RateLimited(message, retry_after_s=retry_after if retry_after is not None else 1.0)
    headers = {"x-tollgate-policy": policy}
    if decision.resets_at is not None:
        headers["x-tollgate-policy-resets-at"] = decision.resets_at.isoformat()
    return BudgetExceeded(message, headers=headers)


def _requested_max(body: Any) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = _int(body.get(key))
        if value:
            return value
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
