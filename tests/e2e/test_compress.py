"""The compress stage end to end: a real gateway in front of the simulated provider, the
official openai SDK as the client, and a pass-through that keeps what reached the upstream."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.compress.test_messages import ANSWER, QUESTION, _document
from tests.support.procs import Proc, admin, ledger_with, money, run_gateway, sdk_client

pytestmark = pytest.mark.e2e

CONFIG = """
store: {{backend: sqlite, path: "{work}/t.db"}}
ledger: {{spool_dir: "{work}/spool", flush_interval_s: 0.02}}
stages:
  auth: {{cache_ttl_s: 0}}
  policy: {{reload_interval_s: 0.2}}
  context: {{enabled: false}}  # this file tests compress alone
  compress: {{min_block_tokens: 100}}
models:
  gpt-4o:
    deployments: [{{provider: openai_compat, model: gpt-4o, api_base: "{upstream}/v1", api_key: k}}]
"""


class Bodies:
    """Forwards every POST to the simulator and keeps the JSON body the gateway sent."""

    def __init__(self, upstream: str) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Forward(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                bodies.append(json.loads(raw))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(upstream + self.path, data=raw, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=30) as resp:
                    status, answer, content_type = resp.status, resp.read(), resp.headers["content-type"]
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def upstream(sim: Proc) -> Iterator[Bodies]:
    bodies = Bodies(sim.url)
    yield bodies
    bodies.close()


@pytest.fixture(scope="module")
def gw(upstream: Bodies, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    work: Path = tmp_path_factory.mktemp("compress")
    with run_gateway(work, CONFIG.format(work=work, upstream=upstream.url)) as proc:
        yield proc


def _messages() -> list[dict[str, Any]]:
    tool_result = json.dumps({"rows": [{"id": i, "status": "shipped"} for i in range(15)]}, indent=4)
    return [
        {"role": "system", "content": "Answer  from the document only."},
        {"role": "user", "content": "Look up my orders."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "orders", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": tool_result},
        {"role": "user", "content": f"<document>\n{_document()}\n</document>\n\n{QUESTION}"},
    ]  # fmt: skip


def _ask(client: openai.OpenAI) -> Any:
    return client.chat.completions.with_raw_response.create(  # type: ignore[call-overload]
        model="gpt-4o", messages=_messages(), temperature=0
    )


def test_lossless_by_default_minifies_the_tool_result_and_keeps_the_rest(gw: Proc, upstream: Bodies) -> None:
    client = sdk_client(gw, "compress-lossless")
    raw = _ask(client)
    assert raw.headers["x-tollgate-transforms"] == "compress:json"
    sent = upstream.bodies[-1]["messages"]
    original = _messages()
    assert sent[0] == original[0] and sent[-1] == original[-1]
    assert json.loads(sent[3]["content"]) == json.loads(original[3]["content"])
    assert len(sent[3]["content"]) < len(original[3]["content"])
    cost, baseline, saved = money(raw)
    assert baseline > cost > 0 and saved == baseline - cost
    client.close()


def test_a_teams_ratio_extracts_the_document_and_the_saving_is_the_stages(gw: Proc, upstream: Bodies) -> None:
    team = f"compress-{uuid.uuid4().hex[:6]}"
    client = sdk_client(gw, team)
    admin(gw, "PUT", f"/admin/policies/{team}", {"stages": {"compress": {"level": 0.4}}})
    deadline = time.monotonic() + 10
    while "extractive" not in (raw := _ask(client)).headers["x-tollgate-transforms"]:
        assert time.monotonic() < deadline, "the team's compress level never took effect"
        time.sleep(0.05)
    assert raw.headers["x-tollgate-transforms"].startswith("compress:json,compress:extractive(0.")
    last = upstream.bodies[-1]["messages"][-1]["content"]
    assert ANSWER in last and last.endswith(QUESTION) and len(last) < 0.6 * len(_messages()[-1]["content"])
    cost, baseline, saved = money(raw)
    assert baseline > cost > 0
    request_id = raw.headers["x-request-id"]
    row = ledger_with(gw, [request_id])[request_id]
    assert Decimal(row["saved_by_stage"]["compress"]) == saved
    client.close()
