"""The accounting benchmarks' shared fixture: a realistic request and answer, a gateway
`Runtime` built with one more layer of accounting switched on per step, the loop that
drives it, and the OTLP receiver (bench/otlp_sink.py) the spans go to."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from gateway.accounting.costing import cost_request  # noqa: E402
from gateway.config import parse_config  # noqa: E402
from gateway.pipeline import CallNext, Principal, Request, RequestContext  # noqa: E402
from gateway.providers.base import ProviderResponse, SSEStream, Usage  # noqa: E402
from gateway.runtime import Runtime  # noqa: E402
from gateway.telemetry import Telemetry  # noqa: E402

MODEL = "gpt-4o-mini"
REQUEST_BODY = {
    "model": MODEL,
    "messages": [{"role": "system", "content": "You are a helpful assistant."},
                 {"role": "user", "content": "Explain in two sentences what an LLM gateway does."}],
    "max_tokens": 128,
    "temperature": 0.2,
}  # fmt: skip
ANSWER = (
    "Sure! Here is a short answer to your question. An LLM gateway sits between your application and "
    "model providers: it authenticates callers, routes each request to a provider, retries or falls back "
    "on errors, enforces rate limits and budgets, and records usage such as tokens and cost for every call."
)
USAGE = {
    "prompt_tokens": 42, "completion_tokens": 61, "total_tokens": 103,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                  "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
}  # fmt: skip
RESPONSE_BODY = orjson.dumps({
    "id": "chatcmpl-mock1", "object": "chat.completion", "created": 1732000000, "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER, "refusal": None, "annotations": []},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": USAGE, "service_tier": "default", "system_fingerprint": "fp_mock0001",
})  # fmt: skip


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: Any = None) -> bytes:
    event: dict[str, Any] = {
        "id": "chatcmpl-mock2", "object": "chat.completion.chunk", "created": 1732000000,
        "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_mock0001",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }  # fmt: skip
    if usage is not None:
        event["usage"] = usage
    return b"data: " + orjson.dumps(event) + b"\n\n"


# What a 20-chunk stream leaves in `SSEStream.seen`: role, 20 words, finish, usage chunk.
STREAM_SEEN = (
    [_chunk({"role": "assistant", "content": "", "refusal": None})]
    + [_chunk({"content": word + " "}) for word in ANSWER.split()[:20]]
    + [_chunk({}, "stop"), _chunk(None, usage=dict(USAGE, completion_tokens=20, total_tokens=62))]
)
STREAM_USAGE = Usage(prompt_tokens=42, completion_tokens=20)

LAYERS = ("loop only", "+ costing", "+ settle, telemetry off", "+ ledger (memory)", "+ ledger spool",
          "+ metrics (Prometheus)", "+ tracing (OTLP)")  # fmt: skip
LAYER_KEYS = {"loop": 0, "costing": 1, "settle": 2, "ledger": 3, "spool": 4, "metrics": 5, "tracing": 6}
FULL = len(LAYERS) - 1


@dataclass
class Setup:
    name: str
    runtime: Runtime
    chain: Any
    settle: int  # 0: nothing, 1: costing alone, 2: Accountant.settle
    principal: Principal | None


class _AuthLike:
    """A stage that does what the auth stage does on a cached key: set the principal."""

    name: ClassVar[str] = "auth"

    def __init__(self, principal: Principal | None) -> None:
        self.principal = principal

    async def __call__(self, ctx: RequestContext, call_next: CallNext) -> ProviderResponse:
        ctx.principal = self.principal
        return await call_next(ctx)


def _config(tmp: Path, layer: int) -> Any:
    return parse_config({
        "server": {"log_level": "warning"},
        "store": {"backend": "sqlite", "path": str(tmp / f"layer{layer}.db")},
        "ledger": {"spool": layer >= LAYER_KEYS["spool"]},
        "telemetry": {"enabled": layer >= LAYER_KEYS["metrics"], "prometheus": layer >= LAYER_KEYS["metrics"]},
        "models": {MODEL: {"deployments": [
            {"provider": "openai_compat", "model": MODEL, "api_base": "http://127.0.0.1:9/v1", "api_key": "sk-x"}]}},
    })  # fmt: skip


async def _setup(tmp: Path, layer: int, sink: str | None) -> Setup:
    config = _config(tmp, layer)
    env = {"OTEL_METRICS_EXPORTER": "none"}
    if layer >= LAYER_KEYS["tracing"]:
        assert sink is not None
        env |= {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": sink}
        # The OTLP exporter reads its endpoint from the process environment itself.
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink
    telemetry = Telemetry.from_env(config.telemetry, environ=env)
    runtime = await Runtime.start(config, telemetry=telemetry)
    principal = Principal(team="bench", key_id="key-bench") if layer >= LAYER_KEYS["ledger"] else None
    deployment = config.models[MODEL].deployments[0]

    async def terminal(ctx: RequestContext) -> ProviderResponse:
        # What the dispatcher leaves on the context; the response is built per request.
        ctx.deployment = deployment
        ctx.served_by = f"{MODEL}#0"
        ctx.served_model = MODEL
        return _CURRENT[0]

    stage = _AuthLike(principal)
    if telemetry.tracing:
        chain = telemetry.around(stage, terminal)
    else:

        async def chain(ctx: RequestContext) -> ProviderResponse:
            return await stage(ctx, terminal)

    return Setup(LAYERS[layer], runtime, chain, settle=min(layer, 2), principal=principal)


# The response the terminal hands back for the request being driven.
_CURRENT: list[ProviderResponse] = [ProviderResponse()]


def _make(mode: str, request: Request, i: int) -> tuple[RequestContext, ProviderResponse]:
    ctx = RequestContext(
        request_id=os.urandom(12).hex(), original=request, request=request,
        client_headers={}, api_key="sk-bench-key",
    )  # fmt: skip
    if mode == "stream":
        stream = SSEStream(_empty())
        stream.seen = list(STREAM_SEEN)
        stream.usage = STREAM_USAGE
        response = ProviderResponse(status=200, stream=stream)
        ctx.first_token_at = ctx.started_at + 0.0002
    else:
        response = ProviderResponse(status=200, raw=RESPONSE_BODY)
    _CURRENT[0] = response
    return ctx, response


async def _empty() -> Any:
    if False:  # pragma: no cover - an empty async iterator
        yield b""


def _requests() -> dict[str, Request]:
    body = REQUEST_BODY
    stream_body = dict(body, stream=True, stream_options={"include_usage": True})
    return {
        "nonstream": Request(endpoint="chat", model=MODEL, body=body, raw=orjson.dumps(body)),
        "stream": Request(
            endpoint="chat", model=MODEL, body=stream_body, stream=True, raw=orjson.dumps(stream_body)
        ),
    }


async def _drive(setup: Setup, mode: str, n: int, request: Request) -> None:
    runtime, chain = setup.runtime, setup.chain
    telemetry, accountant = runtime.telemetry, runtime.accountant
    for i in range(n):
        ctx, _ = _make(mode, request, i)
        telemetry.start(ctx)
        response = await chain(ctx)
        if setup.settle == 2:
            accountant.settle(ctx, response, status=200, outcome="ok")
        elif setup.settle == 1:
            usage, _, _ = accountant._usage(ctx, response)
            cost_request(ctx, usage, accountant.prices, outcome="ok", baseline_price=accountant.baseline)
        if i % 32 == 31:
            await asyncio.sleep(0)  # let the ledger's timer run, as the event loop would


async def _measure(setup: Setup, mode: str, n: int, request: Request) -> tuple[float, float]:
    """CPU microseconds per request, deferred work (rows to SQLite, spans exported) included:
    the whole process, and the part spent on other threads (exporter, SQLite writer)."""
    await setup.runtime.ledger.flush()
    setup.runtime.telemetry.force_flush()
    t0, m0 = time.process_time(), time.thread_time()
    await _drive(setup, mode, n, request)
    await setup.runtime.ledger.flush()
    setup.runtime.telemetry.force_flush()
    total, main = time.process_time() - t0, time.thread_time() - m0
    return total / n * 1e6, (total - main) / n * 1e6


async def _peak_kib(setup: Setup, mode: str, n: int, request: Request) -> float:
    await _drive(setup, mode, 200, request)
    await setup.runtime.ledger.flush()
    setup.runtime.telemetry.force_flush()
    tracemalloc.start()
    try:
        await _drive(setup, mode, n, request)
        await setup.runtime.ledger.flush()
        setup.runtime.telemetry.force_flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 1024


def _start_sink(port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(ROOT / "bench" / "otlp_sink.py"), "--port", str(port)]
    cpus = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") and len(cpus) > 1:
        cmd = ["taskset", "-c", str(cpus[-1]), *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the OTLP sink did not start")


def _sink_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as resp:
        return dict(orjson.loads(resp.read()))


