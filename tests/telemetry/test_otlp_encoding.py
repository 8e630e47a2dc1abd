"""Our OTLP span encoder writes what the SDK's encoder writes: both parsed and compared."""

from __future__ import annotations

import random

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from gateway.telemetry.otlp import EncodingSpanProcessor, OtlpHttpSpanExporter, SpanEncoder
from gateway.telemetry.spans import Trace, Tracer

RESOURCE = Resource.create({"service.name": "tollgate", "deployment.environment": "test"})
SCOPE = InstrumentationScope("tollgate")


def _context(rng: random.Random, *, remote: bool = False, state: TraceState | None = None) -> SpanContext:
    return SpanContext(
        rng.getrandbits(128) or 1,
        rng.getrandbits(64) or 1,
        is_remote=remote,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=state,
    )


def _spans(seed: int) -> list[ReadableSpan]:
    rng = random.Random(seed)
    other_resource = Resource.create(
        {"service.name": "other"}, schema_url="https://opentelemetry.io/schemas/1.26.0"
    )
    other_scope = InstrumentationScope("other", "1.2.3", "https://example.com/schema", {"scope.flag": True})
    values = [
        "gpt-4o-mini",
        "ünïcödé ✓",
        "",
        True,
        False,
        0,
        7,
        -3,
        2**63 - 1,
        0.0,
        0.000123,
        -1.5e300,
        ["stop", "length"],
        [1, 2, 3],
        [True, False],
        [0.5],
        (),
    ]
    spans = []
    for index in range(40):
        attributes = {f"k{rng.randrange(12)}": rng.choice(values) for _ in range(rng.randrange(0, 14))}
        parent = None
        if rng.random() < 0.7:
            parent = _context(rng, remote=rng.random() < 0.5)
        state = TraceState([("vendor", "abc"), ("tg", "1")]) if rng.random() < 0.2 else None
        events = []
        if rng.random() < 0.3:
            events = [
                Event(
                    "tollgate.policy.threshold", {"tollgate.threshold": 0.8, "message": "80%"}, timestamp=123
                )
            ]
        links = [Link(_context(rng), {"link.n": 1})] if rng.random() < 0.2 else []
        status = rng.choice(
            [Status(StatusCode.UNSET), Status(StatusCode.OK), Status(StatusCode.ERROR, "UpstreamError")]
        )
        start = 1_700_000_000_000_000_000 + index
        spans.append(
            ReadableSpan(
                name=rng.choice(["chat gpt-4o-mini", "tollgate.stage auth", "ü"]),
                context=_context(rng, state=state),
                parent=parent,
                resource=rng.choice([RESOURCE, RESOURCE, other_resource]),
                attributes=attributes,
                events=events,
                links=links,
                kind=rng.choice(list(SpanKind)),
                status=status,
                start_time=start,
                end_time=start + rng.randrange(1, 10**9),
                instrumentation_scope=rng.choice([SCOPE, SCOPE, other_scope]),
            )
        )
    return spans


def _normalised(request: ExportTraceServiceRequest) -> list[tuple[bytes, bytes, list[bytes]]]:
    """Group order may differ; within a group the spans keep their order."""
    out = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            head = (
                resource_spans.resource.SerializeToString(deterministic=True)
                + resource_spans.schema_url.encode()
            )
            scope = scope_spans.scope.SerializeToString(deterministic=True) + scope_spans.schema_url.encode()
            out.append((head, scope, [s.SerializeToString(deterministic=True) for s in scope_spans.spans]))
    return sorted(out)


@pytest.mark.parametrize("seed", range(6))
def test_the_encoding_parses_to_what_the_sdk_encodes(seed: int) -> None:
    spans = _spans(seed)
    encoder = SpanEncoder()
    ours = ExportTraceServiceRequest.FromString(encoder.encode(spans))
    theirs = encode_spans(spans)
    assert _normalised(ours) == _normalised(theirs)
    assert sum(len(s.spans) for r in ours.resource_spans for s in r.scope_spans) == len(spans)
    # A second pass is served from the encoder's caches and must not differ.
    assert ExportTraceServiceRequest.FromString(encoder.encode(spans)) == ours


def test_a_true_attribute_and_a_one_are_not_confused_by_the_cache() -> None:
    rng = random.Random(1)
    spans = [
        ReadableSpan(
            "a", _context(rng), resource=RESOURCE, attributes={"x": True}, instrumentation_scope=SCOPE
        ),
        ReadableSpan("b", _context(rng), resource=RESOURCE, attributes={"x": 1}, instrumentation_scope=SCOPE),
    ]
    decoded = ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))
    values = [span.attributes[0].value for span in decoded.resource_spans[0].scope_spans[0].spans]
    assert values[0].WhichOneof("value") == "bool_value" and values[0].bool_value is True
    assert values[1].WhichOneof("value") == "int_value" and values[1].int_value == 1


def test_a_value_that_cannot_be_encoded_is_left_out_and_the_rest_is_sent() -> None:
    rng = random.Random(2)
    span = ReadableSpan(
        "a",
        _context(rng),
        resource=RESOURCE,
        attributes={"ok": "yes", "bad": object()},
        instrumentation_scope=SCOPE,
    )
    decoded = ExportTraceServiceRequest.FromString(SpanEncoder().encode([span]))
    keys = [kv.key for kv in decoded.resource_spans[0].scope_spans[0].spans[0].attributes]
    assert keys == ["ok"]


class _Capture(OtlpHttpSpanExporter):
    """The OTLP/HTTP exporter with its post replaced by keeping what would be posted."""

    def __init__(self) -> None:
        super().__init__(endpoint="http://127.0.0.1:9/v1/traces")
        self.posted: list[bytes] = []

    def export_encoded(self, data: bytes) -> bool:
        self.posted.append(data)
        return True


class _Failed(Exception):
    code = "upstream_timeout"


def _trace(rng: random.Random, index: int) -> Trace:
    parent = _context(rng, remote=rng.random() < 0.6) if rng.random() < 0.6 else None
    state = TraceState([("vendor", "abc")]) if rng.random() < 0.3 else None
    start = 1_700_000_000_000_000_000 + index * 1000
    trace = Trace(
        "chat gpt-4o-mini", rng.getrandbits(128) or 1, rng.getrandbits(64) or 1, parent, state, start,
        {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": rng.randrange(100),
         "tollgate.cost_usd": rng.random(), "gen_ai.response.finish_reasons": ("stop",),
         "gen_ai.request.stream": rng.random() < 0.5},
    )  # fmt: skip
    for n, stage in enumerate(rng.sample(["auth", "policy", "exact_cache", "route", "compress"], 3)):
        error = rng.choice([None, None, ValueError("bad"), _Failed("late")])
        trace.stages.append((stage, start + n, start + n + 5, error))
    if rng.random() < 0.4:
        trace.add_event("tollgate.policy.threshold", {"tollgate.threshold": 0.8, "message": "80%"})
    return trace


@pytest.mark.parametrize("seed", range(4))
def test_a_trace_encoded_from_its_record_is_what_the_sdk_encodes_from_its_spans(seed: int) -> None:
    """The OTLP/HTTP processor's direct path against the SDK's encoder on the spans the
    tracer builds for any other processor, for the same traces and the same span ids."""
    capture = _Capture()
    direct = EncodingSpanProcessor(capture, RESOURCE)
    memory = InMemorySpanExporter()
    tracer = Tracer([direct, SimpleSpanProcessor(memory)], RESOURCE)
    rng = random.Random(seed)
    for index in range(30):
        trace = _trace(rng, index)
        error_type = rng.choice([None, "upstream_error"])
        tracer.close(
            trace, error_type, lambda stage: {"tollgate.saved_input_tokens": 12} if stage == "route" else {}
        )
    direct.force_flush()
    ours = ExportTraceServiceRequest()
    for data in capture.posted:
        ours.MergeFromString(data)
    spans = memory.get_finished_spans()
    assert len(spans) == 120
    assert _normalised(ours) == _normalised(encode_spans(spans))
    tracer.shutdown()


def test_spans_handed_to_the_otlp_processor_as_spans_are_sent_beside_encoded_ones() -> None:
    capture = _Capture()
    direct = EncodingSpanProcessor(capture, RESOURCE)
    tracer = Tracer([direct], RESOURCE)
    rng = random.Random(9)
    tracer.close(_trace(rng, 0), None, lambda stage: {})
    foreign = _spans(3)[:5]
    for span in foreign:
        direct.on_end(span)
    direct.force_flush()
    decoded = ExportTraceServiceRequest()
    for data in capture.posted:
        decoded.MergeFromString(data)
    groups = _normalised(decoded)
    foreign_groups = _normalised(encode_spans(foreign))
    assert all(group in groups for group in foreign_groups)
    rest = [group for group in groups if group not in foreign_groups]
    assert len(rest) == 1 and len(rest[0][2]) == 4  # the request's span and its three stages'
    tracer.shutdown()
