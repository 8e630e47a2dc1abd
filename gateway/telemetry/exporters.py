"""Which exporters the standard OTEL_* variables ask for, and a check that names a bad one."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter


class TelemetryError(ValueError):
    """An OTEL_* variable names something the gateway cannot export to."""


def _names(env: Mapping[str, str], variable: str, signal: str) -> list[str]:
    value = env.get(variable)
    if value is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
        return ["otlp"] if endpoint else []
    return [name.strip() for name in value.split(",") if name.strip() and name.strip() != "none"]


def _protocol(env: Mapping[str, str], signal: str) -> str:
    protocol = (
        env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol not in ("http/protobuf", "grpc"):
        raise TelemetryError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported; use http/protobuf or grpc"
        )
    return protocol


def check_env(environ: Mapping[str, str] | None = None) -> None:
    """Raise TelemetryError naming the OTEL_* variable the gateway could not honour."""
    env = os.environ if environ is None else environ
    known = {"TRACES": ("otlp", "console"), "METRICS": ("otlp", "console", "prometheus")}
    for signal, allowed in known.items():
        for name in _names(env, f"OTEL_{signal}_EXPORTER", signal):
            if name not in allowed:
                raise TelemetryError(
                    f"OTEL_{signal}_EXPORTER: unknown exporter {name!r}; use {', '.join(allowed)} or none"
                )
            if name == "otlp":
                _protocol(env, signal)


def _span_exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for name in _names(env, "OTEL_TRACES_EXPORTER", "TRACES"):
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            if _protocol(env, "TRACES") == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcSpans,
                )

                exporters.append(GrpcSpans())
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter as HttpSpans,
                )

                exporters.append(HttpSpans())
        else:
            raise TelemetryError(
                f"OTEL_TRACES_EXPORTER: unknown exporter {name!r}; use otlp, console or none"
            )
    return exporters


def _metric_exporters(env: Mapping[str, str]) -> list[Any]:
    exporters: list[Any] = []
    for name in _names(env, "OTEL_METRICS_EXPORTER", "METRICS"):
        if name == "prometheus":
            continue  # always served at /metrics when telemetry.prometheus is on
        if name == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            exporters.append(ConsoleMetricExporter())
        elif name == "otlp":
            if _protocol(env, "METRICS") == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                    OTLPMetricExporter as GrpcMetrics,
                )

                exporters.append(GrpcMetrics())
            else:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                    OTLPMetricExporter as HttpMetrics,
                )

                exporters.append(HttpMetrics())
        else:
            raise TelemetryError(
                f"OTEL_METRICS_EXPORTER: unknown exporter {name!r}; use otlp, console, prometheus or none"
            )
    return exporters
