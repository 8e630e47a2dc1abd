"""OTLP/HTTP span export with the protobuf written directly, not built message by message.

The SDK's encoder builds a protobuf object for every span, attribute and value and then
serialises the tree: about 40 us per span of pure Python, on a thread that shares the GIL
with the event loop serving requests. Our spans repeat themselves (the same keys, the same
models and teams, one resource, one scope), so this encoder writes the wire format itself
and keeps the bytes of what repeats: a resource and a scope are encoded once, a key/value
pair of a string or a bool once per distinct pair. The output is the same
`ExportTraceServiceRequest` the SDK's encoder produces (a test parses both and compares).

`OtlpHttpSpanExporter` is the SDK's OTLP/HTTP exporter (endpoint, headers, timeout,
compression, TLS and retries from the standard OTEL_EXPORTER_OTLP_* variables) with only
the encoding replaced.

`EncodingSpanProcessor` is the SDK's `BatchSpanProcessor` (its queue, its thread, its
OTEL_BSP_* settings) fed with spans already encoded: a request's `Trace` goes straight from
its record to wire bytes, with no `ReadableSpan` built in between, and the exporter's thread
only frames a batch and posts it.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from gateway.telemetry.spans import SCOPE, StageAttributes, Trace

log = logging.getLogger("tollgate.telemetry")

_double = struct.Struct("<d").pack
_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack
_SMALL = [bytes((n,)) for n in range(128)]
_INT64 = (1 << 64) - 1
# SpanFlags: the span says whether its parent is remote (bit 8) and, if so, that it is (bit 9).
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
_CACHE_LIMIT = 8192
_VARYING_AFTER = 512  # distinct values of one key before its values stop being cached


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """An AnyValue's fields (without its own length)."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _delimited(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value & _INT64)
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if value is None:
        return b""
    if isinstance(value, bytes):
        return _delimited(b"\x3a", value)
    if isinstance(value, Sequence):
        return _delimited(b"\x2a", b"".join(_delimited(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        pairs = b"".join(_delimited(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        return _delimited(b"\x32", pairs)
    raise TypeError(f"cannot encode {type(value).__name__} as an attribute value")


def _ids(context: Any) -> list[bytes]:
    """A span's or a link's first two fields: its trace id and span id."""
    return [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]


def _key_value(key: str, value: Any) -> bytes:
    return _delimited(b"\x0a", key.encode()) + _delimited(b"\x12", _any_value(value))


_KINDS = {kind: b"\x30" + _SMALL[kind.value + 1] for kind in SpanKind}
_STATUS_CODES = {code: b"\x18" + _SMALL[code.value] if code.value else b"" for code in StatusCode}
_STATUSES = {code: _delimited(b"\x7a", field) for code, field in _STATUS_CODES.items()}
_LOCAL_PARENT = b"\x85\x01" + _fixed32(_HAS_IS_REMOTE)
# Looked up once: an enum member as a dict key hashes in Python, not in C.
_SERVER, _UNSET_STATUS = _KINDS[SpanKind.SERVER], _STATUSES[StatusCode.UNSET]
_REMOTE_PARENT = b"\x85\x01" + _fixed32(_HAS_IS_REMOTE | _IS_REMOTE)


def _strings(value: tuple[Any, ...]) -> bool:
    """A tuple of strings (finish reasons): cacheable as a string is. Not one with numbers
    or bools: (True,) == (1,), and the cache would give one the other's bytes."""
    for item in value:
        if type(item) is not str:
            return False
    return True


def _error_status(description: str) -> bytes:
    return _delimited(b"\x7a", _delimited(b"\x12", description.encode()) + _STATUS_CODES[StatusCode.ERROR])


class SpanEncoder:
    """Spans to `ExportTraceServiceRequest` bytes; one per exporter (it caches, unlocked)."""

    def __init__(self) -> None:
        # (key, type, value) -> a pair's length and bytes; (tag, key) -> a float's head
        self._pairs: dict[tuple[Any, ...], bytes] = {}
        self._names: dict[str, bytes] = {}
        self._stage_names: dict[str, bytes] = {}  # a stage -> its span's name and kind fields
        self._misses: dict[str, int] = {}  # a key -> its values encoded, not found cached
        self._varying: set[str] = set()  # keys whose values are not cached any more
        self._encoded: dict[int, tuple[Any, bytes]] = {}  # id -> (object, bytes): resources, scopes

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        groups: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
        for span in spans:
            resource, scope = span.resource, span.instrumentation_scope
            scopes = groups.setdefault(id(resource), (resource, {}))[1]
            scopes.setdefault(id(scope), (scope, []))[1].append(self._span(span))
        out = []
        for resource, scopes in groups.values():
            body = [self._once(resource, self._resource)]
            for scope, encoded in scopes.values():
                tail = _delimited(b"\x1a", scope.schema_url.encode()) if scope and scope.schema_url else b""
                body.append(_delimited(b"\x12", self._once(scope, self._scope) + b"".join(encoded) + tail))
            if resource.schema_url:
                body.append(_delimited(b"\x1a", resource.schema_url.encode()))
            out.append(_delimited(b"\x0a", b"".join(body)))
        return b"".join(out)

    def trace(
        self, trace: Trace, end_ns: int, error_type: str | None, stage_ids: Sequence[int],
        stage_attributes: StageAttributes,
    ) -> list[bytes]:  # fmt: skip
        """A request's spans straight from its record, each framed as a `ScopeSpans.spans`
        field: its stages' spans (children of the request's), then the request's own. The
        same fields as `_span` writes for the `ReadableSpan`s `Tracer.close` would build."""
        head = b"\x0a\x10" + trace.trace_id.to_bytes(16, "big") + b"\x12\x08"
        root_id = trace.span_id.to_bytes(8, "big")
        state = b""
        if trace.state:
            state = _delimited(b"\x1a", ",".join(f"{k}={v}" for k, v in trace.state.items()).encode())
        child_of_root = state + b"\x22\x08" + root_id
        stage_names = self._stage_names
        out = []
        for (stage, start_ns, stage_end_ns, error), stage_id in zip(trace.stages, stage_ids, strict=True):
            name = stage_names.get(stage)
            if name is None:
                name = stage_names[stage] = self._name(f"tollgate.stage {stage}") + _KINDS[SpanKind.INTERNAL]
            parts = [head, stage_id.to_bytes(8, "big"), child_of_root, name,
                     b"\x39", _fixed64(start_ns), b"\x41", _fixed64(stage_end_ns)]  # fmt: skip
            attributes = {"tollgate.stage": stage, **stage_attributes(stage)}
            if error is None:
                self._attributes(parts, b"\x4a", attributes)
                parts += (_UNSET_STATUS, _LOCAL_PARENT)
            else:
                attributes["error.type"] = getattr(error, "code", None) or type(error).__name__
                self._attributes(parts, b"\x4a", attributes)
                parts += (_error_status(type(error).__name__), _LOCAL_PARENT)
            out.append(_delimited(b"\x12", b"".join(parts)))
        parts = [head, root_id, state]
        parent = trace.parent
        if parent is not None:
            parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
        parts += (self._name(trace.name), _SERVER, b"\x39", _fixed64(trace.start_ns),
                  b"\x41", _fixed64(end_ns))  # fmt: skip
        self._attributes(parts, b"\x4a", trace.attributes)
        for event in trace.events:
            self._event(parts, event)
        parts.append(_UNSET_STATUS if error_type is None else _error_status(error_type))
        parts.append(_REMOTE_PARENT if parent is not None and parent.is_remote else _LOCAL_PARENT)
        out.append(_delimited(b"\x12", b"".join(parts)))
        return out

    # --- pieces ---------------------------------------------------------------------------

    def _span(self, span: ReadableSpan) -> bytes:
        context = span.context
        parent = span.parent
        parts = _ids(context)
        if context.trace_state:
            state = ",".join(f"{key}={value}" for key, value in context.trace_state.items())
            parts.append(_delimited(b"\x1a", state.encode()))
        if parent is not None:
            parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
        parts += (self._name(span.name), _KINDS[span.kind])
        if span.start_time:
            parts += (b"\x39", _fixed64(span.start_time))
        if span.end_time:
            parts += (b"\x41", _fixed64(span.end_time))
        attributes = span.attributes
        if attributes:
            self._attributes(parts, b"\x4a", attributes)
        if span.dropped_attributes:
            parts += (b"\x50", _varint(span.dropped_attributes))
        events = span.events
        for event in events:
            self._event(parts, event)
        if events and span.dropped_events:
            parts += (b"\x60", _varint(span.dropped_events))
        links = span.links
        for link in links:
            linked = link.context
            fields = _ids(linked)
            if link.attributes:
                self._attributes(fields, b"\x22", link.attributes)
            if link.dropped_attributes:
                fields += (b"\x28", _varint(link.dropped_attributes))
            fields += (b"\x35", _fixed32(_HAS_IS_REMOTE | _IS_REMOTE if linked.is_remote else _HAS_IS_REMOTE))
            parts.append(_delimited(b"\x6a", b"".join(fields)))
        if links and span.dropped_links:
            parts += (b"\x70", _varint(span.dropped_links))
        status = span.status
        if status.description:
            message = _delimited(b"\x12", status.description.encode())
            parts.append(_delimited(b"\x7a", message + _STATUS_CODES[status.status_code]))
        else:
            parts.append(_STATUSES[status.status_code])
        parts.append(_REMOTE_PARENT if parent is not None and parent.is_remote else _LOCAL_PARENT)
        return _delimited(b"\x12", b"".join(parts))

    def _event(self, out: list[bytes], event: Any) -> None:
        fields = [b"\x09", _fixed64(event.timestamp), _delimited(b"\x12", event.name.encode())]
        if event.attributes:
            self._attributes(fields, b"\x1a", event.attributes)
        if event.dropped_attributes:
            fields += (b"\x20", _varint(event.dropped_attributes))
        out.append(_delimited(b"\x5a", b"".join(fields)))

    def _name(self, name: str) -> bytes:
        encoded = self._names.get(name)
        if encoded is None:
            if len(self._names) >= _CACHE_LIMIT:
                self._names.clear()
            encoded = self._names[name] = _delimited(b"\x2a", name.encode())
        return encoded

    def _attributes(self, out: list[bytes], tag: bytes, attributes: Mapping[str, Any]) -> None:
        """Append repeated KeyValue under `tag`. A str, bool or int pair (or a tuple of
        strings) is encoded once and kept; a float's key and tags are kept, so only its 8 bytes are new."""
        pairs = self._pairs
        for key, value in attributes.items():
            kind = type(value)
            if kind is float:
                head = pairs.get((tag, key))
                if head is None:
                    pair_head = _delimited(b"\x0a", key.encode()) + b"\x12\x09\x21"
                    head = pairs[(tag, key)] = tag + _varint(len(pair_head) + 8) + pair_head
                out += (head, _double(value))
                continue
            if kind is str or kind is bool or kind is int or (kind is tuple and _strings(value)):
                cached = pairs.get((key, kind, value))
                if cached is None:
                    pair = _key_value(key, value)
                    cached = _varint(len(pair)) + pair
                    if key not in self._varying:
                        self._keep((key, kind, value), cached)
                out += (tag, cached)
                continue
            try:
                pair = _key_value(key, value)
            except TypeError as err:  # the SDK's encoder logs and skips such a value too
                log.warning("span attribute %s not exported: %s", key, err)
                continue
            out += (tag, _varint(len(pair)), pair)

    def _keep(self, pair: tuple[str, type, Any], encoded: bytes) -> None:
        """Cache a pair's bytes, unless its key has shown it seldom repeats (a request id)."""
        pairs = self._pairs
        if len(pairs) >= _CACHE_LIMIT:
            pairs.clear()
        pairs[pair] = encoded
        key = pair[0]
        misses = self._misses[key] = self._misses.get(key, 0) + 1
        if misses > _VARYING_AFTER:
            self._varying.add(key)

    def _resource(self, resource: Any) -> bytes:
        fields: list[bytes] = []
        self._attributes(fields, b"\x0a", resource.attributes)
        return _delimited(b"\x0a", b"".join(fields))

    def _scope(self, scope: Any) -> bytes:
        if scope is None:
            return b"\x0a\x00"
        fields = [_delimited(b"\x0a", scope.name.encode())] if scope.name else []
        if scope.version:
            fields.append(_delimited(b"\x12", scope.version.encode()))
        if scope.attributes:
            self._attributes(fields, b"\x1a", scope.attributes)
        return _delimited(b"\x0a", b"".join(fields))

    def _once(self, thing: Any, encode: Any) -> bytes:
        entry = self._encoded.get(id(thing))
        if entry is None or entry[0] is not thing:
            if len(self._encoded) >= 64:
                self._encoded.clear()
            entry = self._encoded[id(thing)] = (thing, encode(thing))
        return entry[1]


class OtlpHttpSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP span exporter, encoding with `SpanEncoder`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = SpanEncoder()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            data = self._encoder.encode(spans)
        except Exception:
            log.exception("could not encode %d spans", len(spans))
            return SpanExportResult.FAILURE
        result = self._client.export(data)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE

    def export_encoded(self, data: bytes) -> bool:
        """Post an `ExportTraceServiceRequest` already encoded."""
        if self._shutdown:
            return False
        return bool(self._client.export(data).success)


class _Framer:
    """The batch processor's exporter: frames a batch of encoded spans and posts it.

    A batch holds the `Tracer`'s spans as bytes (one resource, one scope) and, from anyone
    calling `on_end`, `ReadableSpan`s, encoded here with their own resource and scope; a
    request with several `ResourceSpans` is their encodings one after another."""

    def __init__(self, exporter: OtlpHttpSpanExporter, resource: Resource) -> None:
        self.exporter = exporter
        self._encoder = SpanEncoder()
        # ResourceSpans { resource, ScopeSpans { scope, spans..., schema_url }, schema_url }
        self._head = self._encoder._resource(resource)
        self._scope = self._encoder._scope(SCOPE)
        self._scope_tail = _delimited(b"\x1a", SCOPE.schema_url.encode()) if SCOPE.schema_url else b""
        self._tail = _delimited(b"\x1a", resource.schema_url.encode()) if resource.schema_url else b""

    def export(self, batch: list[Any]) -> SpanExportResult:
        encoded = [item for item in batch if type(item) is bytes]
        spans = [item for item in batch if type(item) is not bytes] if len(encoded) < len(batch) else []
        try:
            data = b""
            if encoded:
                scope_spans = _delimited(b"\x12", self._scope + b"".join(encoded) + self._scope_tail)
                data = _delimited(b"\x0a", self._head + scope_spans + self._tail)
            if spans:
                data += self._encoder.encode(spans)
        except Exception:
            log.exception("could not encode %d spans", len(batch))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if self.exporter.export_encoded(data) else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.exporter.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class EncodingSpanProcessor(BatchSpanProcessor):
    """`BatchSpanProcessor` over OTLP/HTTP, queueing a request's spans already encoded.

    `on_trace` encodes on the caller's thread (the event loop) what the exporter's thread
    would otherwise get as `ReadableSpan`s and encode: the same work, minus building the
    spans and reading them back. Batching, the queue's bound (dropping the oldest when
    full), OTEL_BSP_* and shutdown are the SDK's; the queue counts spans as it does."""

    def __init__(self, exporter: OtlpHttpSpanExporter, resource: Resource) -> None:
        super().__init__(_Framer(exporter, resource))  # type: ignore[arg-type]
        self._encoder = SpanEncoder()
        self._emit = self._batch_processor.emit

    def on_trace(
        self, trace: Trace, end_ns: int, error_type: str | None, stage_ids: Sequence[int],
        stage_attributes: StageAttributes,
    ) -> None:  # fmt: skip
        try:
            spans = self._encoder.trace(trace, end_ns, error_type, stage_ids, stage_attributes)
        except Exception:
            log.exception("could not encode the spans of trace %032x", trace.trace_id)
            return
        emit = self._emit
        for span in spans:
            emit(span)  # type: ignore[arg-type]
