"""Exporters are chosen by the standard OTEL_* variables; a bad one stops start-up clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.config import TelemetryConfig
from gateway.telemetry import Telemetry, TelemetryError, _metric_exporters, _span_exporters, check_env
from gateway.telemetry.exporters import _sampler
from gateway.telemetry.otlp import OtlpHttpSpanExporter as HttpSpans
from gateway.telemetry.spans import Tracer


def _kinds(env: dict[str, str]) -> list[type]:
    exporters = _span_exporters(env)
    for exporter in exporters:
        exporter.shutdown()
    return [type(e) for e in exporters]


def test_no_exporter_and_no_endpoint_means_no_spans_at_all() -> None:
    assert _kinds({}) == []
    telemetry = Telemetry.from_env(TelemetryConfig(), {})
    assert not telemetry.tracing
    telemetry.shutdown()


def test_an_endpoint_alone_means_otlp_over_http() -> None:
    assert _kinds({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) == [HttpSpans]


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"])
def test_grpc_is_chosen_by_protocol(variable: str) -> None:
    assert _kinds({"OTEL_TRACES_EXPORTER": "otlp", variable: "grpc"}) == [GrpcSpans]


def test_several_exporters_and_none() -> None:
    assert _kinds({"OTEL_TRACES_EXPORTER": "console, otlp"}) == [ConsoleSpanExporter, HttpSpans]
    assert _kinds({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) == []


def test_prometheus_in_the_metrics_variable_is_the_metrics_route() -> None:
    assert _metric_exporters({"OTEL_METRICS_EXPORTER": "prometheus"}) == []


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER: unknown exporter 'jaeger'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        ({"OTEL_METRICS_EXPORTER": "statsd"}, "OTEL_METRICS_EXPORTER: unknown exporter 'statsd'"),
    ],
)
def test_an_unusable_variable_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(TelemetryError, match=named):
        Telemetry.from_env(TelemetryConfig(), env)


def test_telemetry_switched_off_builds_no_tracer_and_no_metrics_route() -> None:
    telemetry = Telemetry.from_env(
        TelemetryConfig(enabled=False), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}
    )
    assert not telemetry.tracing and telemetry.prometheus_text() is None
    telemetry.shutdown()


def test_serve_refuses_an_unusable_variable_before_starting(tmp_path: Path) -> None:
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "zipkin", "TOLLGATE_DB": str(tmp_path / "t.db")}
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "OTEL_TRACES_EXPORTER: unknown exporter 'zipkin'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER: unknown sampler 'sometimes'"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}, "not between 0 and 1"),
    ],
)
def test_an_unusable_sampler_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(TelemetryError, match=named):
        check_env(env)


def test_samplers_decide_which_requests_are_traced_and_the_flag_goes_upstream() -> None:
    exporter = InMemorySpanExporter()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    unsampled_parent = parent[:-2] + "00"
    for env, traceparent, traced in [
        ({}, None, True),
        ({}, unsampled_parent, False),  # the default follows the client's decision
        ({"OTEL_TRACES_SAMPLER": "always_off"}, None, False),
        ({"OTEL_TRACES_SAMPLER": "always_on"}, unsampled_parent, True),
        ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}, parent, True),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}, None, False),
    ]:
        tracer = Tracer([SimpleSpanProcessor(exporter)], Resource.create({}), _sampler(env))
        trace, header = tracer.open("chat m", {"k": "v"}, traceparent, None)
        assert header.endswith("-01" if traced else "-00"), env
        if traceparent:
            assert header.split("-")[1] == traceparent.split("-")[1]  # the client's trace goes on
        assert (trace is not None) == traced, env
        if trace is not None:
            tracer.close(trace, None, lambda stage: {})
            assert exporter.get_finished_spans()[-1].attributes == {"k": "v"}
