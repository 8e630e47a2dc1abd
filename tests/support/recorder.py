"""A pass-through in front of an upstream that records every request the gateway sent it.

The simulated provider keeps no count of what reached it, and retries, cooldowns and
fallbacks are only visible as exactly that: which requests arrived upstream, when, and what
each was answered. Routing tests put a `Recorder` between the gateway and the simulator.
Answers are passed back whole (a stream arrives as one body), which routing tests don't mind.
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

# Hop-by-hop or recomputed: not copied from the upstream's answer.
_SKIPPED_HEADERS = frozenset(
    {"connection", "content-length", "transfer-encoding", "keep-alive", "date", "server"}
)


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as it reached the upstream; times are `time.monotonic()`."""

    path: str
    model: str | None
    status: int  # 0: the upstream dropped the connection without an answer
    arrived: float
    answered: float
    # Header names lower-cased.
    headers: dict[str, str] = field(default_factory=dict)


class Recorder:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def requests(self, model: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if model is None or s.model == model]

    def count(self, model: str | None = None) -> int:
        return len(self.requests(model))

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def serve(self) -> None:
        threading.Thread(target=self._server.serve_forever, name="recorder", daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle's algorithm the second waits for an ACK.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            arrived = time.monotonic()
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                model = orjson.loads(body).get("model")
            except (orjson.JSONDecodeError, AttributeError):
                model = None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            request = urllib.request.Request(
                recorder.upstream + self.path, data=body, headers=headers, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:
                    status, answer, answer_headers = resp.status, resp.read(), resp.headers.items()
            except urllib.error.HTTPError as err:
                status, answer, answer_headers = err.code, err.read(), err.headers.items()
            except OSError:
                # The upstream hung up (a `reset` fault): hang up on the gateway likewise.
                self.close_connection = True
                recorder.record(Seen(self.path, model, 0, arrived, time.monotonic(), _lower(headers)))
                return
            # Recorded before answering, so a test reading the count after its reply sees this one.
            recorder.record(Seen(self.path, model, status, arrived, time.monotonic(), _lower(headers)))
            self.send_response(status)
            for name, value in answer_headers:
                if name.lower() not in _SKIPPED_HEADERS:
                    self.send_header(name, value)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            self.wfile.flush()

        def log_message(self, format: str, *args: object) -> None:
            pass  # the test output is what matters, not an access log

    return Forward


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


@contextlib.contextmanager
def recording(upstream: str) -> Iterator[Recorder]:
    recorder = Recorder(upstream)
    recorder.serve()
    try:
        yield recorder
    finally:
        recorder.close()
