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
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

log = logging.getLogger("tollgate.telemetry")

_double = struct.Struct("<d").pack
_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack
_SMALL = [bytes((n,)) for n in range(128)]
_INT64 = (1 << 64) - 1
# SpanFlags: the span says whether its parent is remote (bit 8) and, if so, that it is (bit 9).
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
_CACHE_LIMIT = 8192


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
_REMOTE_PARENT = b"\x85\x01" + _fixed32(_HAS_IS_REMOTE | _IS_REMOTE)


class SpanEncoder:
    """Spans to `ExportTraceServiceRequest` bytes; one per exporter (it caches, unlocked)."""

    def __init__(self) -> None:
        # (key, type, value) -> a pair's length and bytes; (tag, key) -> a float's head
        self._pairs: dict[tuple[Any, ...], bytes] = {}
        self._names: dict[str, bytes] = {}
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
            fields = [b"\x09", _fixed64(event.timestamp), _delimited(b"\x12", event.name.encode())]
            if event.attributes:
                self._attributes(fields, b"\x1a", event.attributes)
            if event.dropped_attributes:
                fields += (b"\x20", _varint(event.dropped_attributes))
            parts.append(_delimited(b"\x5a", b"".join(fields)))
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

    def _name(self, name: str) -> bytes:
        encoded = self._names.get(name)
        if encoded is None:
            if len(self._names) >= _CACHE_LIMIT:
                self._names.clear()
            encoded = self._names[name] = _delimited(b"\x2a", name.encode())
        return encoded

    def _attributes(self, out: list[bytes], tag: bytes, attributes: Mapping[str, Any]) -> None:
        """Append repeated KeyValue under `tag`. A str, bool or int pair is encoded once and
        kept; a float's key and tags are kept, so only its 8 bytes are new."""
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
            if kind is str or kind is bool or kind is int:
                cached = pairs.get((key, kind, value))
                if cached is None:
                    if len(pairs) >= _CACHE_LIMIT:
                        pairs.clear()
                    pair = _key_value(key, value)
                    cached = pairs[(key, kind, value)] = _varint(len(pair)) + pair
                out += (tag, cached)
                continue
            try:
                pair = _key_value(key, value)
            except TypeError as err:  # the SDK's encoder logs and skips such a value too
                log.warning("span attribute %s not exported: %s", key, err)
                continue
            out += (tag, _varint(len(pair)), pair)

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
