"""A minimal OTLP/HTTP receiver for benchmarks: a real peer for the gateway's span exporter.

Accepts `POST /v1/traces`, `/v1/metrics` and `/v1/logs` (protobuf, optionally gzip),
counts requests, bytes and spans (or metric data points), and answers 200 with an empty
protobuf body, which is a valid empty Export*ServiceResponse. `GET /stats` returns the
counts as JSON. HTTP/1.1 keep-alive on a raw asyncio protocol, so the sink costs little
CPU of its own; pin it to a core the gateway does not use.

    taskset -c 1 .venv/bin/python bench/otlp_sink.py --port 4318
    OTEL_TRACES_EXPORTER=otlp OTEL_METRICS_EXPORTER=none \
        OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 tollgate serve ...
    curl -s 127.0.0.1:4318/stats

`--no-parse` counts bytes only (no protobuf decoding). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import signal
import sys
import time
from typing import Any

_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


class Counts:
    def __init__(self, parse: bool) -> None:
        self.started = time.time()
        self.requests = {"traces": 0, "metrics": 0, "logs": 0}
        self.bytes = {"traces": 0, "metrics": 0, "logs": 0}
        self.spans = 0
        self.metric_points = 0
        self.parse_errors = 0
        self._trace_request: Any = None
        self._metrics_request: Any = None
        if parse:
            try:
                from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
                    ExportMetricsServiceRequest,
                )
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
            except ImportError:  # counts bytes only
                pass
            else:
                self._trace_request, self._metrics_request = (
                    ExportTraceServiceRequest,
                    ExportMetricsServiceRequest,
                )

    def add(self, signal_name: str, body: bytes) -> None:
        self.requests[signal_name] += 1
        self.bytes[signal_name] += len(body)
        try:
            if signal_name == "traces" and self._trace_request is not None:
                message = self._trace_request.FromString(body)
                self.spans += sum(
                    len(scope.spans) for rs in message.resource_spans for scope in rs.scope_spans
                )
            elif signal_name == "metrics" and self._metrics_request is not None:
                message = self._metrics_request.FromString(body)
                for rm in message.resource_metrics:
                    for scope in rm.scope_metrics:
                        for metric in scope.metrics:
                            kind = metric.WhichOneof("data")
                            if kind is not None:
                                self.metric_points += len(getattr(metric, kind).data_points)
        except Exception:
            self.parse_errors += 1

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "uptime_s": round(time.time() - self.started, 1),
                "requests": self.requests,
                "bytes": self.bytes,
                "spans": self.spans,
                "metric_points": self.metric_points,
                "parse_errors": self.parse_errors,
            }
        ).encode()


class _Http(asyncio.Protocol):
    """HTTP/1.1 with Content-Length bodies (what the OTLP exporters send); keep-alive."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            method, path = [*head[0].split(" "), "", ""][:2]
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self._handle(method, path, headers, body)

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        assert self.transport is not None
        if method == "POST" and path in ("/v1/traces", "/v1/metrics", "/v1/logs"):
            if headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            self.counts.add(path[4:], body)
            self.transport.write(_OK)
        elif method == "GET" and path == "/stats":
            payload = self.counts.as_json()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(payload)).encode()
                + b"\r\n\r\n"
                + payload
            )
        else:
            self.transport.write(_NOT_FOUND)
        if headers.get("connection", "").lower() == "close":
            self.transport.close()


async def serve(host: str, port: int, counts: Counts, ready: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Http(counts), host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"otlp sink on http://{host}:{port}", file=sys.stderr, flush=True)
    if ready is not None:
        ready.set()
    async with server:
        await stop.wait()
    print(counts.as_json().decode(), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4318)
    ap.add_argument("--no-parse", action="store_true", help="count bytes only, do not decode protobuf")
    args = ap.parse_args()
    asyncio.run(serve(args.host, args.port, Counts(parse=not args.no_parse)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
