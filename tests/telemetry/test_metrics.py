"""Our instruments count what the OpenTelemetry SDK would, and expose it the standard ways."""

from __future__ import annotations

import random
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import generate_latest

from gateway.telemetry.metrics import Metrics

BOUNDS = (1, 4, 16, 64, 256)
LABELS = ("tollgate.team", "gen_ai.token.type", "error.type")


def _points(data: MetricsData) -> dict[str, dict[tuple[tuple[str, Any], ...], Any]]:
    out: dict[str, dict[tuple[tuple[str, Any], ...], Any]] = {}
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = tuple(sorted((point.attributes or {}).items()))
                    value: Any = getattr(point, "value", None)
                    if value is None:
                        value = (list(point.bucket_counts), point.sum, point.count, point.min, point.max)  # type: ignore[union-attr]
                    out.setdefault(metric.name, {})[key] = value
    return out


def test_histograms_and_counters_match_the_sdks_figures() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader],
        views=[View(instrument_name="tokens", aggregation=ExplicitBucketHistogramAggregation(BOUNDS))],
    )
    meter = provider.get_meter("tollgate")
    sdk_tokens, sdk_cost = meter.create_histogram("tokens"), meter.create_counter("cost")
    ours = Metrics(Resource.create({}))
    tokens = ours.histogram("tokens", "{token}", "t", LABELS, "tokens", BOUNDS)
    cost = ours.counter("cost", "usd", "c", LABELS[:1], "cost")
    rng = random.Random(7)
    # Values on every boundary and either side of it, and beyond the last one.
    values = (
        [b + d for b in BOUNDS for d in (-1, 0, 1)] + [0, 1000] + [rng.randrange(400) for _ in range(200)]
    )
    for value in values:
        team, kind = rng.choice(["a", "b"]), rng.choice(["input", "output"])
        error = rng.choice([None, "timeout"])
        attributes = {"tollgate.team": team, "gen_ai.token.type": kind} | (
            {"error.type": error} if error else {}
        )
        sdk_tokens.record(value, attributes)
        tokens.record(value, (team, kind, error))
        sdk_cost.add(value / 1000, {"tollgate.team": team})
        cost.add(value / 1000, (team,))
    sdk = _points(reader.get_metrics_data())
    mine = _points(ours.collect())
    assert mine["tokens"] == sdk["tokens"]
    assert mine["cost"].keys() == sdk["cost"].keys()
    for key, total in sdk["cost"].items():
        assert abs(mine["cost"][key] - total) < 1e-9
    provider.shutdown()


def test_prometheus_text_has_cumulative_buckets_and_omits_absent_labels() -> None:
    metrics = Metrics(Resource.create({}))
    tokens = metrics.histogram("tokens", "{token}", "Tokens.", LABELS, "gen_ai_client_token_usage", BOUNDS)
    cost = metrics.counter("cost", "usd", "Cost.", LABELS[:1], "tollgate_cost_usd")
    for value in (1, 3, 70):
        tokens.record(value, ("a", "input", None))
    cost.add(0.25, ("a",))
    cost.add(0.5, ("a",))
    text = generate_latest(metrics.registry()).decode()
    team, kind = 'tollgate_team="a"', 'gen_ai_token_type="input"'  # Prometheus sorts labels
    for le, count in (("1.0", 1), ("4.0", 2), ("64.0", 2), ("256.0", 3), ("+Inf", 3)):
        bucket = "gen_ai_client_token_usage_bucket{" + f'{kind},le="{le}",{team}' + "}"
        assert f"{bucket} {count}.0" in text, le
    assert "gen_ai_client_token_usage_count{" + f"{kind},{team}" + "} 3.0" in text
    assert "gen_ai_client_token_usage_sum{" + f"{kind},{team}" + "} 74.0" in text
    assert 'tollgate_cost_usd_total{tollgate_team="a"} 0.75' in text
    assert "error_type" not in text


class _Recording(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.exports: list[MetricsData] = []
        self.shut = False

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exports.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.shut = True


def test_exporters_get_the_figures_periodically_and_once_more_at_shutdown() -> None:
    metrics = Metrics(Resource.create({"service.name": "tollgate"}))
    cost = metrics.counter("tollgate.cost", "usd", "Cost.", ("tollgate.team",), "tollgate_cost_usd")
    exporter = _Recording()
    metrics.export_to([exporter], interval_s=3600)
    cost.add(1.5, ("a",))
    metrics.shutdown()
    assert exporter.shut
    [last] = exporter.exports
    [metric] = last.resource_metrics[0].scope_metrics[0].metrics
    assert metric.name == "tollgate.cost" and metric.unit == "usd"
    assert metric.data.is_monotonic  # type: ignore[union-attr]
    assert [(p.attributes, p.value) for p in metric.data.data_points] == [({"tollgate.team": "a"}, 1.5)]
    assert last.resource_metrics[0].resource.attributes["service.name"] == "tollgate"
