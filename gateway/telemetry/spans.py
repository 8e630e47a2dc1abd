"""A request's spans, recorded as plain data while it runs and built once, when it ends.

The SDK's `Tracer` makes a live `Span` per span: attribute validation on every set, a lock,
a context to attach, and a copy into a `ReadableSpan` at the end; about 20 us per span on
the event loop. A request's spans here are the request and one per stage, all known to the
gateway and all ending when the request does, so they are kept as ids, clock readings and
a dict of attributes, and turned into the SDK's own `ReadableSpan` objects at the end. From
there on everything is the SDK's: its span processors (batching, `OTEL_BSP_*`), its
exporters, its samplers (`OTEL_TRACES_SAMPLER`, read as the SDK reads it). A processor that
takes a whole `Trace` (`TraceProcessor`: OTLP/HTTP's, which encodes it to wire bytes
directly) is given the record itself and no `ReadableSpan` is built for it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)
SCOPE = InstrumentationScope("tollgate")
# A stage's name -> the attributes its span gets from what the stage recorded.
StageAttributes = Callable[[str], dict[str, Any]]


@dataclass(slots=True)
class Trace:
    """A sampled request's span while it runs: the request and, as each ends, its stages."""

    name: str
    trace_id: int
    span_id: int
    parent: SpanContext | None
    state: TraceState | None
    start_ns: int
    attributes: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    # (stage, start ns, end ns, the exception it raised), in the order they ended
    stages: list[tuple[str, int, int, BaseException | None]] = field(default_factory=list)

    def add_event(self, name: str, attributes: Mapping[str, Any]) -> None:
        self.events.append(Event(name, attributes, time.time_ns()))


@runtime_checkable
class TraceProcessor(Protocol):
    """A span processor that takes a request's finished `Trace` as it is."""

    def on_trace(
        self, trace: Trace, end_ns: int, error_type: str | None, stage_ids: Sequence[int],
        stage_attributes: StageAttributes,
    ) -> None: ...  # fmt: skip

    def shutdown(self) -> None: ...

    def force_flush(self, timeout_millis: int = 30000) -> bool: ...


class Tracer:
    """Opens a request's `Trace` and hands its finished spans to the span processors."""

    def __init__(
        self,
        processors: Sequence[SpanProcessor | TraceProcessor],
        resource: Resource,
        sampler: Sampler | None = None,
    ) -> None:
        self._all = tuple(processors)
        self._direct = tuple(p for p in processors if isinstance(p, TraceProcessor))
        self._processors = tuple(p for p in processors if not isinstance(p, TraceProcessor))
        self._resource = resource
        self._sampler = sampler  # None: the SDK's default, parent-based always-on, inlined

    def open(
        self, name: str, attributes: dict[str, Any], traceparent: str | None, tracestate: str | None
    ) -> tuple[Trace | None, str]:
        """The request's trace (None when not sampled) and the traceparent to send upstream."""
        parent = parse_traceparent(traceparent, tracestate)
        trace_id = parent.trace_id if parent is not None else _random_id(128)
        span_id = _random_id(64)
        if self._sampler is None:
            sampled = parent.trace_flags.sampled if parent is not None else True
            state = parent.trace_state if parent is not None else None
        else:
            context = set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None
            result = self._sampler.should_sample(context, trace_id, name, SpanKind.SERVER, attributes)
            sampled, state = result.decision.is_sampled(), result.trace_state  # type: ignore[no-untyped-call]
        header = f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"
        if not sampled:
            return None, header
        return Trace(name, trace_id, span_id, parent, state, time.time_ns(), attributes), header

    def close(self, trace: Trace, error_type: str | None, stage_attributes: StageAttributes) -> None:
        """End the request's span now; hand it and its stages' spans to the processors."""
        end_ns = time.time_ns()
        stage_ids = [_random_id(64) for _ in trace.stages]
        for direct in self._direct:
            direct.on_trace(trace, end_ns, error_type, stage_ids, stage_attributes)
        if not self._processors:
            return
        resource = self._resource
        root = SpanContext(trace.trace_id, trace.span_id, False, _SAMPLED, trace.state)
        spans = []
        for (stage, start_ns, stage_end_ns, error), stage_id in zip(trace.stages, stage_ids, strict=True):
            attributes = {"tollgate.stage": stage, **stage_attributes(stage)}
            status = _UNSET
            if error is not None:
                status = Status(StatusCode.ERROR, type(error).__name__)
                attributes["error.type"] = getattr(error, "code", None) or type(error).__name__
            context = SpanContext(trace.trace_id, stage_id, False, _SAMPLED, trace.state)
            spans.append(
                ReadableSpan(f"tollgate.stage {stage}", context, root, resource, attributes, (), (),
                             SpanKind.INTERNAL, None, status, start_ns, stage_end_ns, SCOPE)
            )  # fmt: skip
        status = _UNSET if error_type is None else Status(StatusCode.ERROR, error_type)
        spans.append(
            ReadableSpan(trace.name, root, trace.parent, resource, trace.attributes, trace.events, (),
                         SpanKind.SERVER, None, status, trace.start_ns, end_ns, SCOPE)
        )  # fmt: skip
        for processor in self._processors:
            for span in spans:
                processor.on_end(span)

    def shutdown(self) -> None:
        for processor in self._all:
            processor.shutdown()

    def force_flush(self) -> None:
        for processor in self._all:
            processor.force_flush()


def _random_id(bits: int) -> int:
    """As the SDK's RandomIdGenerator: random bits, never the invalid all-zero id."""
    while True:
        value = random.getrandbits(bits)
        if value:
            return value


def parse_traceparent(traceparent: str | None, tracestate: str | None) -> SpanContext | None:
    """The client's W3C trace context, parsed by hand: a few string operations per request."""
    if not traceparent:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or parts[0] == "ff":
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    state = TraceState.from_header([tracestate]) if tracestate else None
    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 1), trace_state=state
    )
