"""Which exporters the standard OTEL_* variables ask for, and a check that names a bad one."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import sampling
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


# What each signal's OTEL_*_EXPORTER may name, as "module:class" per exporter and protocol;
# imported only when chosen. `prometheus` builds nothing here: it is the /metrics route.
_FACTORIES: dict[str, dict[str, str | None]] = {
    "TRACES": {
        "console": "opentelemetry.sdk.trace.export:ConsoleSpanExporter",
        "otlp/grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter:OTLPSpanExporter",
        "otlp/http/protobuf": "gateway.telemetry.otlp:OtlpHttpSpanExporter",
    },
    "METRICS": {
        "console": "opentelemetry.sdk.metrics.export:ConsoleMetricExporter",
        "otlp/grpc": "opentelemetry.exporter.otlp.proto.grpc.metric_exporter:OTLPMetricExporter",
        "otlp/http/protobuf": "opentelemetry.exporter.otlp.proto.http.metric_exporter:OTLPMetricExporter",
        "prometheus": None,
    },
}


def _chosen(env: Mapping[str, str], signal: str) -> list[str | None]:
    """The exporters the variables name for one signal, checked; raises TelemetryError."""
    table = _FACTORIES[signal]
    chosen: list[str | None] = []
    for name in _names(env, f"OTEL_{signal}_EXPORTER", signal):
        key = f"otlp/{_protocol(env, signal)}" if name == "otlp" else name
        if key not in table:
            allowed = sorted({k.split("/")[0] for k in table})
            raise TelemetryError(
                f"OTEL_{signal}_EXPORTER: unknown exporter {name!r}; use {', '.join(allowed)} or none"
            )
        chosen.append(table[key])
    return chosen


def _build(env: Mapping[str, str], signal: str) -> list[Any]:
    exporters = []
    for path in _chosen(env, signal):
        if path is not None:
            module, _, name = path.partition(":")
            exporters.append(getattr(importlib.import_module(module), name)())
    return exporters


def check_env(environ: Mapping[str, str] | None = None) -> None:
    """Raise TelemetryError naming the OTEL_* variable the gateway could not honour."""
    env = os.environ if environ is None else environ
    for signal in _FACTORIES:
        _chosen(env, signal)
    _sampler(env)


_SAMPLERS = {
    "always_on": lambda rate: sampling.ALWAYS_ON,
    "always_off": lambda rate: sampling.ALWAYS_OFF,
    "traceidratio": sampling.TraceIdRatioBased,
    "parentbased_always_on": lambda rate: sampling.DEFAULT_ON,
    "parentbased_always_off": lambda rate: sampling.DEFAULT_OFF,
    "parentbased_traceidratio": sampling.ParentBasedTraceIdRatio,
}


def _sampler(env: Mapping[str, str]) -> sampling.Sampler | None:
    """OTEL_TRACES_SAMPLER and its _ARG; None for the default, parent-based always-on."""
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if not name or name == "parentbased_always_on":
        return None
    if name not in _SAMPLERS:
        raise TelemetryError(f"OTEL_TRACES_SAMPLER: unknown sampler {name!r}; use {', '.join(_SAMPLERS)}")
    argument = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    try:
        rate = float(argument) if argument else 1.0
    except ValueError:
        raise TelemetryError(f"OTEL_TRACES_SAMPLER_ARG: {argument!r} is not a number") from None
    if not 0.0 <= rate <= 1.0:
        raise TelemetryError(f"OTEL_TRACES_SAMPLER_ARG: {rate} is not between 0 and 1")
    return _SAMPLERS[name](rate)


def _span_exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    return _build(env, "TRACES")


def _metric_exporters(env: Mapping[str, str]) -> list[Any]:
    return _build(env, "METRICS")
