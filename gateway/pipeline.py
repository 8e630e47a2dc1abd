"""The one-way request pipeline: `RequestContext`, the `Stage` protocol and the chain.

A stage sees the context and `call_next`. Before calling it the stage may replace
`ctx.request` or answer at once; after it, it may observe the response. It reports what it
did only through `ctx.record(...)`, which accounting turns into savings by stage. Stages
never talk to each other. A stage that is switched off is not in the chain at all, so the
gateway with every stage off is the terminal handler alone: a plain proxy.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, ClassVar, Literal, Protocol

from gateway.config import Deployment
from gateway.providers.base import Endpoint, ProviderResponse

Wire = Literal["openai", "anthropic"]

# Client request headers passed upstream as they are (lower-case name prefixes): they can
# change the answer, so the exact cache keys on them too.
FORWARDED_HEADER_PREFIXES: tuple[str, ...] = ("x-sim-",)


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed, validated request in the gateway's internal (OpenAI) format.

    Frozen: a stage that changes the request builds a new one with `replace(...)`.
    `raw` holds the client's bytes while the body is still exactly what the client sent,
    so the fast path forwards them without re-serialising.
    """

    endpoint: Endpoint
    model: str
    body: Mapping[str, Any]
    stream: bool = False
    raw: bytes | None = None

    def replace(self, **changes: Any) -> Request:
        if "body" in changes:
            changes.setdefault("raw", None)
            changes["body"] = MappingProxyType(dict(changes["body"]))
            changes.setdefault("model", changes["body"].get("model", self.model))
        return dataclasses.replace(self, **changes)

    @property
    def include_usage(self) -> bool:
        options = self.body.get("stream_options")
        return bool(isinstance(options, Mapping) and options.get("include_usage"))


@dataclass(slots=True)
class StageRecord:
    stage: str
    saved_input_tokens: int = 0
    saved_output_tokens: int = 0
    saved_usd: Decimal = Decimal(0)
    # This stage answered the request, or chose who did: it earns whatever part of the
    # saving no other stage accounts for (a cache hit's whole baseline, a cheaper route).
    owns_remainder: bool = False
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: resolved by the auth stage."""

    team: str
    key_id: str
    is_master: bool = False


@dataclass(slots=True)
class RequestContext:
    request_id: str
    original: Request
    request: Request
    wire: Wire = "openai"
    # Client headers passed upstream (simulator fault switches, trace context ...).
    client_headers: dict[str, str] = field(default_factory=dict)
    # The few client request headers stages read (`cache-control`, `x-tollgate-cache`), by
    # lower-case name.
    request_headers: Mapping[str, str] = field(default_factory=dict)
    # The credential the client presented (Bearer or x-api-key); only the auth stage reads it.
    api_key: str | None = None
    # The application's own end user (a header, else the body's `user`), for per-user budgets.
    end_user: str | None = None
    principal: Principal | None = None
    # This team's settings for each stage (stage name -> settings), from its policy; a stage
    # reads its own entry and validates it. Empty when the team has no policy.
    stage_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    records: list[StageRecord] = field(default_factory=list)
    # Set when the request may wait for a provider batch (`gateway.batch.Deferral`): by the
    # client's `x-tollgate-defer`, or the policy stage on a budget whose action is `defer`.
    deferral: Any = None
    # Budget charges this request holds, (charge key, `usd`|`tokens`, amount, ttl_s), set by the
    # policy stage: a deferred request keeps them until its batch result is costed.
    holds: list[tuple[str, str, int, float]] = field(default_factory=list)
    # Headers added to the client's response (x-tollgate-*).
    response_headers: dict[str, str] = field(default_factory=dict)
    # Filled by the terminal handler: the deployment that answered.
    deployment: Deployment | None = None
    served_by: str | None = None
    served_model: str | None = None
    started_at: float = field(default_factory=time.perf_counter)
    # When the first streamed byte left for the client.
    first_token_at: float | None = None
    # The request's trace, owned by gateway.telemetry (None when tracing is off).
    trace: Any = None
    # Set once the request has been costed, so no exit path costs it twice.
    settled: bool = False
    # Called with the request's cost report when it settles, whatever the exit (a budget
    # reservation trued up to the real cost, say). Called once; must not block.
    on_settle: list[Callable[[Any], None]] = field(default_factory=list)

    def record(
        self,
        stage: str,
        *,
        saved_input_tokens: int = 0,
        saved_output_tokens: int = 0,
        saved_usd: Decimal | int | float = 0,
        owns_remainder: bool = False,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Say what this stage did. Savings are given in tokens (priced by accounting at the
        requested model's rates) or in USD; `owns_remainder` claims what is otherwise unexplained."""
        self.records.append(
            StageRecord(
                stage=stage,
                saved_input_tokens=saved_input_tokens,
                saved_output_tokens=saved_output_tokens,
                saved_usd=saved_usd if isinstance(saved_usd, Decimal) else Decimal(str(saved_usd)),
                owns_remainder=owns_remainder,
                detail=detail or {},
            )
        )

    @property
    def team(self) -> str:
        return self.principal.team if self.principal else "anonymous"


CallNext = Callable[[RequestContext], Awaitable[ProviderResponse]]

# The response header that names, comma-separated, what each stage did to the request.
TRANSFORMS_HEADER = "x-tollgate-transforms"


def add_transform(ctx: RequestContext, text: str) -> None:
    """Name one transformation of the request in the `x-tollgate-transforms` header."""
    current = ctx.response_headers.get(TRANSFORMS_HEADER)
    ctx.response_headers[TRANSFORMS_HEADER] = f"{current},{text}" if current else text


class Stage(Protocol):
    name: ClassVar[str]

    async def __call__(self, ctx: RequestContext, call_next: CallNext) -> ProviderResponse: ...


# The canonical order of every stage the gateway knows (DESIGN.md). A stage that is not
# built yet, or is switched off, is simply absent from the chain.
CANONICAL_ORDER: tuple[str, ...] = (
    "auth",
    "policy",
    "exact_cache",
    "context",
    "compress",
    "semantic_cache",
    "route",
    "defer",
)


# Wraps one stage's call (a trace span around it, say); given the stage and what it calls next.
Around = Callable[[Stage, CallNext], CallNext]


def build_chain(stages: Sequence[Stage], terminal: CallNext, *, around: Around | None = None) -> CallNext:
    """Compose the stages around the terminal handler, once, at start-up.

    Stages must come in canonical order; one out of order is a configuration bug.
    """
    positions = [CANONICAL_ORDER.index(stage.name) for stage in stages]
    if positions != sorted(positions):
        raise ValueError(f"stages out of canonical order: {[s.name for s in stages]}")
    handler = terminal
    for stage in reversed(stages):
        handler = around(stage, handler) if around is not None else _bind(stage, handler)
    return handler


def _bind(stage: Stage, call_next: CallNext) -> CallNext:
    async def call(ctx: RequestContext) -> ProviderResponse:
        return await stage(ctx, call_next)

    return call
