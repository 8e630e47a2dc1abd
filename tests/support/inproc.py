"""A real gateway (uvicorn on loopback) in this process, so tests can read its spans in memory."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.config import parse_config
from gateway.server import TollgateApp, create_app
from gateway.telemetry import Telemetry
from tests.support.asgi_thread import serve_in_thread
from tests.support.procs import http

MASTER_KEY = "tg-master-inproc"


@dataclass
class InProcGateway:
    url: str
    app: TollgateApp
    spans: InMemorySpanExporter

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        status, _, parsed = http(
            method, self.url + path, body=body, headers={"authorization": f"Bearer {MASTER_KEY}"}
        )
        assert status < 300, (status, parsed)
        return parsed

    def team_key(self, team: str) -> str:
        self.admin("POST", "/admin/teams", {"id": team})
        return str(self.admin("POST", "/admin/keys", {"team": team, "name": "test"})["key"])

    def ledger_row(self, request_id: str) -> dict[str, Any]:
        rows = [r for r in self.admin("GET", "/admin/ledger")["data"] if r["request_id"] == request_id]
        assert len(rows) == 1, f"{len(rows)} ledger rows for {request_id}"
        return rows[0]

    def root_span(self, request_id: str) -> ReadableSpan:
        roots = [
            s
            for s in self.spans.get_finished_spans()
            if (s.attributes or {}).get("tollgate.request_id") == request_id
        ]
        assert len(roots) == 1, f"{len(roots)} root spans for {request_id}"
        return roots[0]

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans.get_finished_spans()
            if s.parent is not None and s.parent.span_id == span.context.span_id
        ]


@contextlib.contextmanager
def inproc_gateway(config: str, *, capture_content: bool = False) -> Iterator[InProcGateway]:
    data = yaml.safe_load(config)
    data.setdefault("server", {})["master_key"] = MASTER_KEY
    data.setdefault("telemetry", {})["capture_content"] = capture_content
    parsed = parse_config(data)
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(parsed.telemetry, span_processors=[SimpleSpanProcessor(exporter)])
    app = create_app(parsed, telemetry=telemetry)
    with serve_in_thread(app) as url:
        yield InProcGateway(url, app, exporter)


def usd(header: str) -> Decimal:
    return Decimal(header)
