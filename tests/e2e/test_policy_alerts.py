"""A budget threshold crossing is reported once: log, span event, metric and webhook."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.support.inproc import InProcGateway, inproc_gateway
from tests.support.procs import Proc, http

# Every token costs $0.001: a request's cost is its token count in thousandths.
CONFIG = """
store: {{backend: sqlite, path: "{db}"}}
stages:
  auth: {{cache_ttl_s: 0}}
  policy: {{file: "{policies}", reload_interval_s: 0.2, alert_webhook: "{hook}"}}
models:
  metered:
    deployments:
      - {{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k,
         price: {{input_per_mtok: 1000, output_per_mtok: 1000}}}}
"""
POLICY = """
teams:
  watched:
    budgets: [{name: daily, amount_usd: 1, period: day, action: alert_only, alert_at: [0.05]}]
"""
HI = [{"role": "user", "content": "hi"}]


class Hook:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.received.append(orjson.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def hook() -> Iterator[Hook]:
    receiver = Hook()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def gw(sim: Proc, hook: Hook, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcGateway]:
    work = Path(tmp_path_factory.mktemp("alerts"))
    (work / "policies.yaml").write_text(POLICY)
    config = CONFIG.format(db=work / "t.db", policies=work / "policies.yaml", hook=hook.url, sim=sim.url)
    with inproc_gateway(config) as gateway:
        yield gateway


def test_a_crossed_threshold_is_reported_once_everywhere(gw: InProcGateway, hook: Hook) -> None:
    client = openai.OpenAI(base_url=gw.v1, api_key=gw.team_key("watched"), max_retries=0)
    crossing = []
    for _ in range(8):  # each reserves about $0.02 worth (max_tokens 10 + the prompt): $0.05 is crossed once
        raw = client.chat.completions.with_raw_response.create(model="metered", messages=HI, max_tokens=10)
        events = [
            e
            for e in gw.root_span(raw.headers["x-request-id"]).events
            if e.name == "tollgate.policy.threshold"
        ]
        crossing += events
    deadline = time.monotonic() + 5
    while not hook.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (
        len(crossing) == 1
        and (crossing[0].attributes or {})["tollgate.policy"] == "team:watched/budget:daily"
    )
    assert len(hook.received) == 1
    alert = hook.received[0]
    assert (alert["event"], alert["team"], alert["policy"], alert["fraction"]) == (
        "policy.threshold", "watched", "team:watched/budget:daily", 0.05,
    )  # fmt: skip
    assert "5%" in alert["message"] or "daily budget" in alert["message"]
    _, _, text = http("GET", gw.url + "/metrics")
    metrics = text.decode() if isinstance(text, bytes) else str(text)
    lines = [
        line
        for line in metrics.splitlines()
        if line.startswith("tollgate_policy_alerts_total{") and 'tollgate_team="watched"' in line
    ]
    assert lines and float(lines[0].rsplit(" ", 1)[1]) == 1.0
