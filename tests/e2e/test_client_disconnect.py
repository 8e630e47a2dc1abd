"""A client that hangs up mid-stream stops the upstream stream: no tokens generated for nobody."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from tests.support.procs import Proc, run_gateway


class _SlowStream:
    """An OpenAI-wire upstream that streams one chunk every 50 ms for up to 20 s."""

    def __init__(self) -> None:
        self.hung_up_at: float | None = None
        self.chunks_sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "slow",
                         "choices": [{"index": 0, "delta": {"content": "tick "}, "finish_reason": None}]}  # fmt: skip
                event = b"data: " + orjson.dumps(chunk) + b"\n\n"
                try:
                    for _ in range(400):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                        self.wfile.flush()
                        outer.chunks_sent += 1
                        time.sleep(0.05)
                except OSError:
                    outer.hung_up_at = time.monotonic()
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def slow_upstream() -> Iterator[_SlowStream]:
    upstream = _SlowStream()
    upstream.thread.start()
    yield upstream
    upstream.server.shutdown()
    upstream.server.server_close()


@pytest.fixture
def gateway(slow_upstream: _SlowStream, tmp_path: Path) -> Iterator[Proc]:
    config = f"""
store: {{backend: memory}}
stages: {{auth: {{enabled: false}}}}
models:
  slow:
    deployments: [{{provider: openai_compat, model: slow, api_base: "{slow_upstream.url}/v1", api_key: k}}]
"""
    with run_gateway(tmp_path, config) as proc:
        yield proc


def test_hanging_up_mid_stream_closes_the_upstream_stream(gateway: Proc, slow_upstream: _SlowStream) -> None:
    body = orjson.dumps({"model": "slow", "stream": True, "messages": [{"role": "user", "content": "go"}]})
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        received = b""
        while received.count(b"tick") < 3:
            received += client.recv(65536)
    hung_up = time.monotonic()
    deadline = hung_up + 5
    while slow_upstream.hung_up_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slow_upstream.hung_up_at is not None, "the upstream kept streaming to a client that had left"
    # Well before the 20 s the upstream would have streamed for.
    assert slow_upstream.hung_up_at - hung_up < 5
    assert slow_upstream.chunks_sent < 200
