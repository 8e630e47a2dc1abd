"""The gateway's counters and histograms: kept in plain dicts, read when someone asks.

The OpenTelemetry metrics SDK spends 5-12 us per measurement on the caller's thread
(attribute validation, hashing a frozenset of the attributes, a lock, a view lookup); a
request makes five. Our instruments are few and fixed, with fixed label names, so a
measurement here is a dict lookup by a tuple of label values and a few additions (under
1 us). The figures leave in two standard ways:

- `/metrics`: Prometheus text through a `prometheus_client` collector, the names the
  OpenTelemetry Prometheus exporter gives (`gen_ai_client_token_usage`,
  `tollgate_cost_usd_total`, ...);
- OTLP or console, as OTEL_METRICS_EXPORTER asks: a thread builds the SDK's own
  `MetricsData` (cumulative sums, explicit-bucket histograms) every
  OTEL_METRIC_EXPORT_INTERVAL ms and hands it to the SDK's exporter.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry.sdk.metrics import export as otel
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric as PrometheusMetric
from prometheus_client.utils import floatToGoString

log = logging.getLogger("tollgate.telemetry")

_CUMULATIVE = AggregationTemporality.CUMULATIVE
_SCOPE = InstrumentationScope("tollgate")


class Instrument:
    """One metric: fixed label names; a series per tuple of label values (None: absent)."""

    def __init__(
        self, name: str, unit: str, description: str, labels: Sequence[str], prometheus: str
    ) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.labels = tuple(labels)
        self.prometheus = prometheus  # the Prometheus name, without a counter's `_total`
        self._lock = threading.Lock()

    def attributes(self, values: tuple[Any, ...]) -> dict[str, Any]:
        return {name: value for name, value in zip(self.labels, values, strict=True) if value is not None}

    def labels_for(self, values: tuple[Any, ...]) -> dict[str, str]:
        """Prometheus labels: the attribute names with `_` for `.`."""
        return {name.replace(".", "_"): str(value) for name, value in zip(self.labels, values, strict=True)
                if value is not None}  # fmt: skip


class Counter(Instrument):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._totals: dict[tuple[Any, ...], float] = {}

    def add(self, amount: float, values: tuple[Any, ...]) -> None:
        with self._lock:
            self._totals[values] = self._totals.get(values, 0.0) + amount

    def series(self) -> list[tuple[tuple[Any, ...], float]]:
        with self._lock:
            return list(self._totals.items())


class Histogram(Instrument):
    """Explicit buckets as OpenTelemetry counts them: bucket i holds (bound[i-1], bound[i]]."""

    def __init__(self, *args: Any, boundaries: Sequence[float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.boundaries = tuple(float(b) for b in boundaries)
        # values -> [bucket counts, sum, count, min, max]
        self._series: dict[tuple[Any, ...], list[Any]] = {}

    def record(self, value: float, values: tuple[Any, ...]) -> None:
        with self._lock:
            state = self._series.get(values)
            if state is None:
                state = self._series[values] = [[0] * (len(self.boundaries) + 1), 0.0, 0, math.inf, -math.inf]
            state[0][bisect_left(self.boundaries, value)] += 1
            state[1] += value
            state[2] += 1
            if value < state[3]:
                state[3] = value
            if value > state[4]:
                state[4] = value

    def series(self) -> list[tuple[tuple[Any, ...], list[Any]]]:
        with self._lock:
            return [(values, [list(s[0]), s[1], s[2], s[3], s[4]]) for values, s in self._series.items()]


class Metrics:
    """The instruments, their Prometheus collector and their periodic exporters."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.instruments: list[Counter | Histogram] = []
        self.started_ns = time.time_ns()
        self._exports: list[_PeriodicExport] = []

    def counter(
        self, name: str, unit: str, description: str, labels: Sequence[str], prometheus: str
    ) -> Counter:
        instrument = Counter(name, unit, description, labels, prometheus)
        self.instruments.append(instrument)
        return instrument

    def histogram(
        self, name: str, unit: str, description: str, labels: Sequence[str], prometheus: str,
        boundaries: Sequence[float],
    ) -> Histogram:  # fmt: skip
        instrument = Histogram(name, unit, description, labels, prometheus, boundaries=boundaries)
        self.instruments.append(instrument)
        return instrument

    # --- Prometheus -------------------------------------------------------------------------

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return registry

    # --- OpenTelemetry export ---------------------------------------------------------------

    def export_to(self, exporters: Sequence[MetricExporter], interval_s: float) -> None:
        for exporter in exporters:
            export = _PeriodicExport(self, exporter, max(interval_s, 0.01))
            export.start()
            self._exports.append(export)

    def collect(self) -> MetricsData:
        """Every series now, as the SDK's cumulative data: what its exporters take."""
        now = time.time_ns()
        start = self.started_ns
        metrics = []
        for instrument in self.instruments:
            data: Sum | otel.Histogram
            if isinstance(instrument, Counter):
                numbers = [NumberDataPoint(instrument.attributes(values), start, now, total)
                           for values, total in instrument.series()]  # fmt: skip
                data = Sum(numbers, _CUMULATIVE, is_monotonic=True)
            else:
                bounds = instrument.boundaries
                histograms = [
                    HistogramDataPoint(
                        instrument.attributes(values), start, now, s[2], s[1], s[0], bounds, s[3], s[4]
                    )
                    for values, s in instrument.series()
                ]
                data = otel.Histogram(histograms, _CUMULATIVE)
            if data.data_points:
                metrics.append(Metric(instrument.name, instrument.description, instrument.unit, data))
        scope = ScopeMetrics(_SCOPE, metrics, "")
        return MetricsData([ResourceMetrics(self.resource, [scope], self.resource.schema_url)])

    def shutdown(self) -> None:
        """A last export of everything, then the exporters stop."""
        for export in self._exports:
            export.stop()
        self._exports.clear()


class _Collector:
    """Prometheus text: one family per instrument, a sample per series."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[PrometheusMetric]:
        for instrument in self.metrics.instruments:
            name = instrument.prometheus
            if isinstance(instrument, Counter):
                family = PrometheusMetric(name, instrument.description, "counter")
                for values, total in instrument.series():
                    family.add_sample(f"{name}_total", instrument.labels_for(values), total)
                yield family
                continue
            family = PrometheusMetric(name, instrument.description, "histogram")
            bounds = [*(floatToGoString(b) for b in instrument.boundaries), "+Inf"]  # type: ignore[no-untyped-call]
            for values, state in instrument.series():
                labels = instrument.labels_for(values)
                cumulative = 0
                for bound, count in zip(bounds, state[0], strict=True):
                    cumulative += count
                    family.add_sample(f"{name}_bucket", {**labels, "le": bound}, cumulative)
                family.add_sample(f"{name}_count", labels, state[2])
                family.add_sample(f"{name}_sum", labels, state[1])
            yield family


class _PeriodicExport:
    """The SDK's PeriodicExportingMetricReader's job, for our instruments."""

    def __init__(self, metrics: Metrics, exporter: MetricExporter, interval_s: float) -> None:
        self._metrics, self._exporter, self._interval_s = metrics, exporter, interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tollgate-metrics-export", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self._export()

    def _export(self) -> None:
        try:
            self._exporter.export(self._metrics.collect())
        except Exception:
            log.exception("metrics export failed")

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)
        self._export()
        self._exporter.shutdown()
