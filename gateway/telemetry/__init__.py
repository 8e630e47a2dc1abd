"""OpenTelemetry traces and metrics for every proxied request, and Prometheus exposition.

A request is one SERVER span, `chat gpt-4o`, following the GenAI semantic conventions
(`gen_ai.*`) plus the product's own figures (`tollgate.cost_usd`, `tollgate.baseline_usd`,
`tollgate.saved_usd`, savings by stage), with a child span per pipeline stage. A client's
`traceparent` is continued, and the upstream receives ours, so a trace runs from the app
through the gateway to the provider.

Exporters come from the standard variables: OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER
(`otlp`, `console`, `none`; comma lists), OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]PROTOCOL
(`http/protobuf`, `grpc`), OTEL_EXPORTER_OTLP_* endpoints and headers (read by the
exporters), OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*. One difference from
the SDK's defaults: with no exporter named and no OTLP endpoint set, nothing is exported and
no spans are built at all, so a gateway with no collector pays nothing for tracing.

Providers are built here and passed in, never set globally: a process can hold several
gateways (tests do), and the global providers can be set only once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Sampler
from prometheus_client import generate_latest

from gateway.accounting.costing import CostReport, Outcome
from gateway.config import TelemetryConfig
from gateway.pipeline import CallNext, RequestContext, Stage
from gateway.providers.base import ProviderResponse
from gateway.telemetry.exporters import (
    TelemetryError,
    _metric_exporters,
    _sampler,
    _span_exporters,
    check_env,
)
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.otlp import EncodingSpanProcessor, OtlpHttpSpanExporter
from gateway.telemetry.spans import Trace, TraceProcessor, Tracer

__all__ = ["Telemetry", "TelemetryError", "Trace", "_metric_exporters", "_span_exporters", "check_env"]

log = logging.getLogger("tollgate.telemetry")

_OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}
# Our provider kinds as the GenAI conventions name them; others keep their own name.
_PROVIDER_NAMES = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "cohere": "cohere",
    "mistral": "mistral_ai",
    "azure": "azure.ai.openai",
    "groq": "groq",
    "deepseek": "deepseek",
    "local": "tollgate.local_engine",
    "sim": "tollgate.sim",
}
# Bucket boundaries the GenAI metric conventions recommend.
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
# The attributes every request's metrics and span share, in the order finish() gives them.
_HEAD = ("gen_ai.operation.name", "gen_ai.request.model", "tollgate.team", "gen_ai.provider.name",
         "gen_ai.response.model")  # fmt: skip
_REQUEST_PARAMS = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("seed", "gen_ai.request.seed"),
    ("n", "gen_ai.request.choice.count"),
)


class Telemetry:
    def __init__(
        self,
        config: TelemetryConfig,
        *,
        span_processors: Sequence[SpanProcessor | TraceProcessor] = (),
        metric_exporters: Sequence[MetricExporter] = (),
        metric_interval_s: float = 60.0,
        resource: Resource | None = None,
        sampler: Sampler | None = None,
    ) -> None:
        self.config = config
        resource = resource or Resource.create({})
        self._tracer = Tracer(span_processors, resource, sampler) if span_processors else None
        self._metrics = Metrics(resource)
        # A registry of our own: never the process-global one several gateways would share.
        self.registry = self._metrics.registry() if config.enabled and config.prometheus else None
        head, money = _HEAD, ("tollgate.team", "gen_ai.request.model")
        metrics = self._metrics
        self._token_usage = metrics.histogram(
            "gen_ai.client.token.usage", "{token}", "Tokens used per request, by type.",
            (*head, "gen_ai.token.type"), "gen_ai_client_token_usage", _TOKEN_BUCKETS,
        )  # fmt: skip
        self._duration = metrics.histogram(
            "gen_ai.client.operation.duration", "s", "Time from request to the last byte of the answer.",
            (*head, "tollgate.outcome", "error.type"), "gen_ai_client_operation_duration_seconds", _DURATION_BUCKETS,
        )  # fmt: skip
        self._cost = metrics.counter("tollgate.cost", "usd", "What requests cost.", money, "tollgate_cost_usd")
        self._baseline = metrics.counter(
            "tollgate.baseline", "usd", "What requests would have cost with no gateway.", money, "tollgate_baseline_usd"
        )
        self._alerts = metrics.counter(
            "tollgate.policy.alerts", "{alert}", "Budget and rate thresholds crossed.",
            ("tollgate.team", "tollgate.policy", "tollgate.threshold"), "tollgate_policy_alerts",
        )  # fmt: skip
        self._saved = metrics.counter(
            "tollgate.saved", "usd", "Savings by the stage that earned them.", (*money, "tollgate.stage"),
            "tollgate_saved_usd",
        )  # fmt: skip
        if config.enabled and metric_exporters:
            metrics.export_to(metric_exporters, metric_interval_s)

    @classmethod
    def from_env(cls, config: TelemetryConfig, environ: Mapping[str, str] | None = None) -> Telemetry:
        env = os.environ if environ is None else environ
        if not config.enabled:
            return cls(config)
        attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": config.service_name}
        resource = Resource.create(attributes)
        processors = [
            EncodingSpanProcessor(exporter, resource) if isinstance(exporter, OtlpHttpSpanExporter)
            else BatchSpanProcessor(exporter)
            for exporter in _span_exporters(env)
        ]  # fmt: skip
        interval_s = float(env.get("OTEL_METRIC_EXPORT_INTERVAL") or 60000) / 1000
        return cls(config, span_processors=processors, metric_exporters=_metric_exporters(env),
                   metric_interval_s=interval_s, resource=resource, sampler=_sampler(env))  # fmt: skip

    @property
    def tracing(self) -> bool:
        return self._tracer is not None

    # --- the request span ---------------------------------------------------------------

    def start(self, ctx: RequestContext) -> None:
        """Open the request's span (a child of the client's traceparent) and pass ours upstream."""
        tracer = self._tracer
        if tracer is None:
            return
        request = ctx.request
        operation = _OPERATIONS[request.endpoint]
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": request.model,
            "tollgate.request_id": ctx.request_id,
            "tollgate.wire": ctx.wire,
        }
        if request.stream:
            attributes["gen_ai.request.stream"] = True
        body = request.body
        for key, name in _REQUEST_PARAMS:
            value = body.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[name] = value
        if self.config.capture_content:
            attributes["gen_ai.input.messages"] = _input_text(request.endpoint, body)
        headers = ctx.client_headers
        ctx.trace, headers["traceparent"] = tracer.open(
            f"{operation} {request.model}", attributes, headers.get("traceparent"), headers.get("tracestate")
        )

    def around(self, stage: Stage, call_next: CallNext) -> CallNext:
        """A child span per stage: its clock readings now, its span when the request ends."""
        name = stage.name

        async def call(ctx: RequestContext) -> ProviderResponse:
            trace: Trace | None = ctx.trace
            if trace is None:
                return await stage(ctx, call_next)
            start = time.time_ns()
            error = None
            try:
                return await stage(ctx, call_next)
            except BaseException as err:
                error = err
                raise
            finally:
                trace.stages.append((name, start, time.time_ns(), error))

        return call

    def finish(
        self,
        ctx: RequestContext,
        report: CostReport,
        *,
        status: int,
        outcome: Outcome,
        error_type: str | None,
        finish_reasons: Sequence[str] = (),
        output_text: str | None = None,
    ) -> None:
        """Metrics for every request; the span's closing attributes when it is traced."""
        if not self.config.enabled:
            return
        now = time.perf_counter()
        usage = report.usage
        operation, model, team = _OPERATIONS[ctx.request.endpoint], ctx.original.model, ctx.team
        head = (operation, model, team, _provider_name(ctx), ctx.served_model or None)
        # The histograms' sums and counts are the token and request counters.
        self._duration.record(now - ctx.started_at, (*head, outcome, error_type))
        if usage is not None:
            self._token_usage.record(usage.prompt_tokens, (*head, "input"))
            self._token_usage.record(usage.completion_tokens, (*head, "output"))
        money = (team, model)
        if report.cost_usd is not None:
            self._cost.add(float(report.cost_usd), money)
        if report.baseline_usd is not None:
            self._baseline.add(float(report.baseline_usd), money)
        for stage, saved in report.saved_by_stage.items():
            self._saved.add(float(saved), (team, model, stage))
        trace: Trace | None = ctx.trace
        if trace is not None:
            common = {name: value for name, value in zip(_HEAD, head, strict=True) if value is not None}
            self._end_span(trace, ctx, report, common, status, outcome, error_type, finish_reasons, output_text)

    def _end_span(
        self,
        trace: Trace,
        ctx: RequestContext,
        report: CostReport,
        common: Mapping[str, Any],
        status: int,
        outcome: Outcome,
        error_type: str | None,
        finish_reasons: Sequence[str],
        output_text: str | None,
    ) -> None:
        attributes = trace.attributes
        attributes.update(common)
        attributes["http.response.status_code"] = status
        attributes["tollgate.outcome"] = outcome
        if ctx.principal is not None:
            attributes["tollgate.key_id"] = ctx.principal.key_id
        if ctx.served_by:
            attributes["tollgate.deployment"] = ctx.served_by
        usage = report.usage
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
            attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_prompt_tokens
            attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
            if usage.reasoning_tokens:
                attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
            if usage.estimated:
                attributes["tollgate.usage_estimated"] = True
        if finish_reasons:
            attributes["gen_ai.response.finish_reasons"] = tuple(finish_reasons)
        if ctx.first_token_at is not None:
            attributes["gen_ai.response.time_to_first_chunk"] = ctx.first_token_at - ctx.started_at
        for name, amount in (
            ("tollgate.cost_usd", report.cost_usd),
            ("tollgate.baseline_usd", report.baseline_usd),
            ("tollgate.saved_usd", report.saved_usd),
        ):
            if amount is not None:
                attributes[name] = float(amount)
        if report.cost_usd is None:
            attributes["tollgate.cost_unknown"] = True
        for stage, saved in report.saved_by_stage.items():
            attributes[f"tollgate.saved_usd.{stage}"] = float(saved)
        if output_text is not None and self.config.capture_content:
            attributes["gen_ai.output.messages"] = orjson.dumps(
                [{"role": "assistant", "content": output_text}]
            ).decode()
        if error_type is not None:
            attributes["error.type"] = error_type
        assert self._tracer is not None
        records = ctx.records
        self._tracer.close(trace, error_type, lambda stage: _record_attributes(records, stage))

    def alert(self, ctx: RequestContext, alert: Any) -> None:
        """A policy threshold crossed: a span event on the request and a counted metric."""
        self._alerts.add(1, (ctx.team, alert.policy, float(alert.fraction)))
        trace: Trace | None = ctx.trace
        if trace is not None:
            trace.add_event(
                "tollgate.policy.threshold",
                {"tollgate.policy": alert.policy, "tollgate.threshold": float(alert.fraction),
                 "tollgate.usage": alert.usage, "tollgate.cap": alert.cap, "message": alert.message},
            )  # fmt: skip

    # --- exposition and shutdown ----------------------------------------------------------

    def prometheus_text(self) -> bytes | None:
        return None if self.registry is None else generate_latest(self.registry)

    def shutdown(self) -> None:
        """Export what is buffered, then stop the exporters' threads."""
        if self._tracer is not None:
            self._tracer.shutdown()
        self._metrics.shutdown()

    def force_flush(self) -> None:
        if self._tracer is not None:
            self._tracer.force_flush()


def _record_attributes(records: Sequence[Any], stage: str) -> dict[str, Any]:
    """A stage span's attributes: what the stage recorded."""
    attributes: dict[str, Any] = {}
    for record in records:
        if record.stage != stage:
            continue
        if record.saved_input_tokens:
            attributes["tollgate.saved_input_tokens"] = record.saved_input_tokens
        if record.saved_output_tokens:
            attributes["tollgate.saved_output_tokens"] = record.saved_output_tokens
        if record.saved_usd:
            attributes["tollgate.saved_usd"] = float(record.saved_usd)
        for key, value in record.detail.items():
            if isinstance(value, str | bool | int | float):
                attributes[f"tollgate.{stage}.{key}"] = value
    return attributes


def _provider_name(ctx: RequestContext) -> str | None:
    if ctx.deployment is None:
        return None
    provider = ctx.deployment.provider
    return _PROVIDER_NAMES.get(provider, provider)


def _input_text(endpoint: str, body: Mapping[str, Any]) -> str:
    key = {"chat": "messages", "completions": "prompt", "embeddings": "input"}[endpoint]
    return orjson.dumps(body.get(key)).decode()
