"""Spans leave a served gateway over OTLP/HTTP, and a receiver decodes what it was sent.

The gateway runs as its own process with only the standard OTEL_* variables set; the
receiver is a real HTTP server in this test that parses every request as the collector's
`ExportTraceServiceRequest`, so the bytes on the wire are checked, not our objects.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import openai
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.procs import Proc, run_gateway, sdk_client, serving

CONFIG = """
store: {{backend: sqlite, path: "{db}"}}
router: {{retries: 0}}
stages: {{auth: {{cache_ttl_s: 0}}}}
models:
  gpt-4o-mini:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k, timeout_s: 5}}]
"""
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


class Receiver:
    """Every span received, with the resource attributes it came under."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Span]] = []
        self.encodings: set[str] = set()
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.lock = threading.Lock()

    def add_metrics(self, body: bytes) -> None:
        with self.lock:
            self.metrics.append(ExportMetricsServiceRequest.FromString(body))

    def token_sums(self, team: str) -> dict[str, float]:
        """The last export's `gen_ai.client.token.usage` sums for one team, by token type."""
        with self.lock:
            last = self.metrics[-1] if self.metrics else None
        sums: dict[str, float] = {}
        for resource_metrics in last.resource_metrics if last else ():
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != "gen_ai.client.token.usage":
                        continue
                    for point in metric.histogram.data_points:
                        attrs = _attributes(point.attributes)
                        if attrs.get("tollgate.team") == team:
                            kind = attrs["gen_ai.token.type"]
                            sums[kind] = sums.get(kind, 0) + point.sum
        return sums

    def add(self, body: bytes, encoding: str) -> None:
        self.encodings.add(encoding)
        if encoding == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    self.spans += [(resource, span) for span in scope_spans.spans]

    def wait_for(self, request_id: str, timeout_s: float = 10.0) -> tuple[dict[str, Any], Span, list[Span]]:
        """The request's span (by `tollgate.request_id`) and its children, once exported."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                roots = [
                    (r, s)
                    for r, s in self.spans
                    if _attributes(s.attributes).get("tollgate.request_id") == request_id
                ]
                if roots:
                    resource, root = roots[0]
                    children = [s for _, s in self.spans if s.parent_span_id == root.span_id]
                    assert len(roots) == 1
                    return resource, root, children
            time.sleep(0.05)
        raise AssertionError(f"no span for {request_id} within {timeout_s}s")


def _attributes(pairs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        value = getattr(pair.value, kind) if kind else None
        if kind == "array_value":
            value = [getattr(v, v.WhichOneof("value")) for v in value.values]
        out[pair.key] = value
    return out


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[str, Receiver]]:
    received = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            status = 404
            if self.path == "/v1/traces":
                received.add(body, self.headers.get("content-encoding", "identity"))
                status = 200
            elif self.path == "/v1/metrics":
                received.add_metrics(body)
                status = 200
            self.send_response(status)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Handler) as base:
        yield base, received


@pytest.fixture(scope="module")
def gateway(
    sim: Proc, receiver: tuple[str, Receiver], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    work = tmp_path_factory.mktemp("otlp")
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver[0],  # no exporter named: OTLP over HTTP
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    }
    with run_gateway(work, CONFIG.format(db=work / "t.db", sim=sim.url), env=env) as proc:
        yield proc


def test_a_request_arrives_as_a_genai_span_with_its_cost_and_its_stage(
    gateway: Proc, receiver: tuple[str, Receiver]
) -> None:
    client = sdk_client(gateway, "otlp-team")
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "What does the ledger say?"}],
        max_tokens=20,
        extra_headers={"traceparent": traceparent, "tracestate": "vendor=abc"},
    )
    usage = raw.parse().usage
    assert usage is not None
    resource, root, children = receiver[1].wait_for(raw.headers["x-tollgate-request-id"])

    assert resource["service.name"] == "tollgate"
    assert resource["deployment.environment"] == "test"
    assert receiver[1].encodings == {"gzip"}
    assert root.name == "chat gpt-4o-mini"
    assert root.kind == Span.SpanKind.SPAN_KIND_SERVER
    assert root.trace_id.hex() == CLIENT_TRACE and root.parent_span_id.hex() == CLIENT_SPAN
    assert root.trace_state == "vendor=abc"
    assert root.flags & 0x300 == 0x300  # the parent is known, and remote
    assert root.end_time_unix_nano > root.start_time_unix_nano > 0
    attrs = _attributes(root.attributes)
    assert {k: attrs[k] for k in (
        "gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model", "gen_ai.request.max_tokens",
        "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "tollgate.team", "http.response.status_code",
    )} == {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.request.max_tokens": 20, "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens, "tollgate.team": "otlp-team",
        "http.response.status_code": 200,
    }  # fmt: skip
    assert attrs["tollgate.cost_usd"] == pytest.approx(float(raw.headers["x-tollgate-cost-usd"]), abs=1e-12)
    assert attrs["tollgate.baseline_usd"] == pytest.approx(
        float(raw.headers["x-tollgate-baseline-usd"]), abs=1e-12
    )
    assert attrs["gen_ai.response.finish_reasons"] == [raw.parse().choices[0].finish_reason]

    [auth] = [c for c in children if c.name == "tollgate.stage auth"]
    assert auth.trace_id == root.trace_id and auth.kind == Span.SpanKind.SPAN_KIND_INTERNAL
    assert (
        root.start_time_unix_nano
        <= auth.start_time_unix_nano
        <= auth.end_time_unix_nano
        <= root.end_time_unix_nano
    )
    assert _attributes(auth.attributes)["tollgate.stage"] == "auth"
    assert auth.flags & 0x300 == 0x100  # its parent is local


def test_a_refused_request_is_exported_as_a_failed_span(
    gateway: Proc, receiver: tuple[str, Receiver]
) -> None:
    client = openai.OpenAI(base_url=gateway.v1, api_key="tg-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    request_id = caught.value.response.headers["x-tollgate-request-id"]
    _, root, children = receiver[1].wait_for(request_id)
    assert root.status.code == root.status.STATUS_CODE_ERROR
    assert _attributes(root.attributes)["http.response.status_code"] == 401
    [auth] = [c for c in children if c.name == "tollgate.stage auth"]
    assert auth.status.code == auth.status.STATUS_CODE_ERROR
    assert "error.type" in _attributes(auth.attributes)


def test_a_stream_is_exported_with_its_usage(gateway: Proc, receiver: tuple[str, Receiver]) -> None:
    client = sdk_client(gateway, "otlp-team")
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Stream it."}], stream=True
    ) as response:
        request_id = response.headers["x-tollgate-request-id"]
        chunks = list(response.parse())
    assert chunks
    _, root, _ = receiver[1].wait_for(request_id)
    attrs = _attributes(root.attributes)
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.usage.output_tokens"] > 0
    assert len(root.trace_id) == 16 and root.trace_id != bytes(16)
    assert root.flags & 0x300 == 0x100  # no parent from the client: a new trace


def test_metrics_are_exported_over_otlp_with_tokens_per_team(
    gateway: Proc, receiver: tuple[str, Receiver]
) -> None:
    client = sdk_client(gateway, "metered-otlp")
    prompt = completion = 0
    for _ in range(2):
        usage = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Count me."}]
        ).usage
        assert usage is not None
        prompt, completion = prompt + usage.prompt_tokens, completion + usage.completion_tokens
    deadline = time.monotonic() + 10
    while receiver[1].token_sums("metered-otlp") != {"input": prompt, "output": completion}:
        assert time.monotonic() < deadline, receiver[1].token_sums("metered-otlp")
        time.sleep(0.1)
