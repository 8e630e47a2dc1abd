"""What accounting and tracing cost per request, in process, layer by layer.

Every proxied request ends in `Accountant.settle`: usage -> cost report -> ledger row
(spooled to a file, batched into the store) -> metrics -> the span's end. This script runs
exactly that path with the real objects of a running gateway (a `Runtime` on a SQLite
store, its `Accountant`, `Ledger` and `Telemetry`), on a realistic request context and a
provider response shaped like the benchmark mock's (a ~60-token chat.completion, or a
20-chunk stream with a usage chunk), N times per configuration, each layer switched on in
turn:

  loop only          context, `telemetry.start`, one stage (auth-like) and the terminal
  + costing          usage from the response and the cost report (`cost_request`), alone
  + settle, tel. off `Accountant.settle` with `telemetry: {enabled: false}` and no principal
                     (no ledger row): costing plus the metric calls with no reader behind
  + ledger (memory)  a principal, so a ledger row: rows batched into SQLite, spool off
  + ledger spool     each row also appended to the spool file (one os.write)
  + metrics          Prometheus reader on: histograms and counters per request
  + tracing          OTLP/HTTP exporter (BatchSpanProcessor) to a real receiver
                     (bench/otlp_sink.py, pinned to the other core): a SERVER span per
                     request and a child span for the stage

CPU is `time.process_time()` (every thread of the process: the span exporter's thread and
the SQLite writer's included), taken over the whole run plus the final flush of rows and
spans, per request, in microseconds. The process is pinned to one CPU, the receiver to
another, as in the gateway overhead harness. Configurations run round-robin, `--rounds`
times; the table shows the median and the spread. Peak memory: tracemalloc's peak over a
separate, shorter pass of each configuration (after warm-up), and the process's peak RSS.

    .venv/bin/python bench/accounting_overhead.py                 # ~1 minute
    .venv/bin/python bench/accounting_overhead.py --profile tracing --mode nonstream

`--harness` measures the same thing end to end instead, with the shared gateway overhead
harness (../shared/bench/gateway_overhead.py: wrk, the Go mock, the gateway pinned to CPU 0),
one harness run per configuration, back to back:

  plain-mem   the plain proxy before accounting and tracing (a worktree of commit e7f24d6,
              `--plain-tree`), bench/overhead.yaml as it is: memory store, auth off
  plain       the same, SQLite store and auth on (a virtual key)
  main-off    this tree, SQLite + auth, `telemetry: {enabled: false}`, `ledger: {spool: false}`
  main-full   this tree, SQLite + auth, ledger spool on, Prometheus metrics, and spans over
              OTLP/HTTP (BatchSpanProcessor) to bench/otlp_sink.py on the load-generator core
  main-metrics  main-full without spans (ledger spool and Prometheus metrics only)
  main-mem    this tree, memory store, auth off (no ledger row), Prometheus metrics, no spans

Every main-* run has the policy stage off (`TOLLGATE_BENCH_POLICY=false`): the plain proxy
has no such stage, and what it costs is not accounting. `--main-tree` runs another
checkout's code (a worktree pinned to one commit) on this tree's bench/overhead.yaml.

    git worktree add /tmp/tg-plain e7f24d6
    .venv/bin/python bench/accounting_overhead.py --harness --plain-tree /tmp/tg-plain --repeat 2

It prints gw CPU-ms per request for each (the harness's `gw CPU-s/1k req`), and
main-full - plain, the added cost, at each concurrency; harness options after `--`.

`--breakdown` times each piece of the path on its own, without a profiler's distortion:
usage, cost, ledger row, spool write, the SQLite batch per row, metrics (with and without a
reader), the request span's start and end, the stage span, and the exporter's protobuf
encoding and HTTP post per request; in microseconds per request (`--mode` picks the shape).

`--split` serves each configuration (gateway on CPU 0; the mock, wrk and the receiver on
CPU 1) and reads every thread's CPU from /proc during a wrk run: what the event loop pays,
and what the span exporter's and the SQLite writer's threads pay, per request.

    .venv/bin/python bench/accounting_overhead.py --split --plain-tree /tmp/tg-plain \
        --configs plain,main-off,main-metrics,main-full --repeat 3 --mode nonstream

`--profile LAYER` runs cProfile over that layer and prints the top functions in
microseconds per request (cProfile's own overhead inflates them: compare, do not add).
The last line is `RESULT accounting_tracing_cpu_ms=...`: what the full stack (tracing
row) costs beyond the loop-only row, per non-streamed request, the larger of the two modes
in `..._max_cpu_ms`. It is the work itself, in isolation; in a serving gateway the same work
costs more (see `--harness`, whose RESULT line carries the verdict).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import os
import pstats
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
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
from gateway.accounting.settle import ledger_row  # noqa: E402
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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _main(args: argparse.Namespace) -> int:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[0]})  # the gateway's core; the sink gets another
    port = _free_port()
    sink = _start_sink(port)
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-acct-"))
    setups: list[Setup] = []
    try:
        for layer in range(len(LAYERS)):
            setups.append(await _setup(tmp, layer, f"http://127.0.0.1:{port}"))
        gc.collect()
        gc.freeze()  # as the server does once started
        requests = _requests()
        modes = ("nonstream", "stream") if args.mode == "both" else (args.mode,)

        if args.breakdown:
            for mode in modes:
                await _drive(setups[FULL], mode, 1000, requests[mode])
                rounds = []
                for _ in range(args.rounds):
                    rounds.append(
                        await _breakdown(setups, mode, args.n, requests[mode], f"http://127.0.0.1:{port}")
                    )
                    setups[FULL].runtime.telemetry.force_flush()
                _print_breakdown(mode, args.n, rounds)
            return 0

        if args.profile:
            setup = setups[LAYER_KEYS[args.profile]]
            base = setups[0]
            for mode in modes:
                await _drive(setup, mode, 1000, requests[mode])
                plain, _ = await _measure(base, mode, args.n, requests[mode])
                full, threads = await _measure(setup, mode, args.n, requests[mode])
                # CPU time, not wall time: with a wall clock, waits for the GIL held by the
                # exporter's thread would be charged to whatever the loop was doing.
                profiler = cProfile.Profile(time.thread_time)
                exporting = _profile_exports(setup.runtime.telemetry)
                profiler.enable()
                await _drive(setup, mode, args.n, requests[mode])
                await setup.runtime.ledger.flush()
                setup.runtime.telemetry.force_flush()
                profiler.disable()
                print(f"\n# cProfile (thread CPU time), layer {setup.name!r}, {mode}, {args.n} requests; unprofiled: "
                      f"{full:.1f} us/req ({threads:.1f} of it on other threads), loop only {plain:.1f}, "
                      f"added {full - plain:.1f}\n\n## event-loop thread")  # fmt: skip
                _print_profile(profiler, args.n, args.top, full - threads)
                if exporting is not None:
                    print("\n## span exporter thread (BatchSpanProcessor -> OTLPSpanExporter.export)")
                    _print_profile(exporting, args.n, args.top, threads)
            return 0

        for setup in setups:  # warm-up: code paths, price memo, sockets to the sink
            for mode in modes:
                await _drive(setup, mode, 500, requests[mode])
        cpu: dict[tuple[int, str], list[float]] = {}
        other: dict[tuple[int, str], list[float]] = {}
        for _ in range(args.rounds):
            for layer, setup in enumerate(setups):
                for mode in modes:
                    total, threads = await _measure(setup, mode, args.n, requests[mode])
                    cpu.setdefault((layer, mode), []).append(total)
                    other.setdefault((layer, mode), []).append(threads)
        peaks = {
            (layer, mode): await _peak_kib(setup, mode, args.mem_n, requests[mode])
            for layer, setup in enumerate(setups)
            for mode in modes
        }
        stats = _sink_stats(port)
        rows = await setups[LAYER_KEYS["ledger"]].runtime.ledger.rows(limit=1)
        assert rows and rows[0].get("cost_usd"), "ledger rows must be stored with a cost"
    finally:
        for setup in setups:
            await setup.runtime.aclose()
        sink.terminate()
        sink.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)

    med = {key: statistics.median(values) for key, values in cpu.items()}
    print(f"# accounting + tracing per request, in process: {args.n} requests x {args.rounds} rounds per cell, "
          f"pinned to CPU {cpus[0]}; CPU us/request = median (min-max); peak = tracemalloc over {args.mem_n} requests")  # fmt: skip
    header = (
        "| layer | "
        + " | ".join(
            f"{mode} CPU us/req | +us vs row above | of it other threads | peak KiB" for mode in modes
        )
        + " |"
    )
    print(header)
    print("|---|" + "---:|" * (4 * len(modes)))
    for layer, name in enumerate(LAYERS):
        cells = []
        for mode in modes:
            values = cpu[(layer, mode)]
            delta = "-" if layer == 0 else f"{med[(layer, mode)] - med[(layer - 1, mode)]:+.1f}"
            cells += [f"{med[(layer, mode)]:.1f} ({min(values):.1f}-{max(values):.1f})", delta,
                      f"{statistics.median(other[(layer, mode)]):.1f}", f"{peaks[(layer, mode)]:.0f}"]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")
    added = {mode: (med[(FULL, mode)] - med[(0, mode)]) / 1000 for mode in modes}
    for mode in modes:
        print(f"| accounting + tracing ({mode}) = tracing - loop only | {added[mode] * 1000:.1f} us |")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# OTLP sink received {stats['spans']} spans in {stats['requests']['traces']} exports "
          f"({stats['bytes']['traces'] / 1e6:.1f} MB); process peak RSS {rss_mb:.0f} MB")  # fmt: skip
    figure = added.get("nonstream", max(added.values()))
    parts = [f"accounting_tracing_cpu_ms={figure:.4f}"]
    parts += [f"{mode}_cpu_ms={value:.4f}" for mode, value in added.items()]
    # In process only: the end-to-end figure (and the verdict) comes from `--harness`.
    parts += [f"accounting_tracing_max_cpu_ms={max(added.values()):.4f}", "scope=in_process",
              "target_cpu_ms=0.3", f"peak_rss_mb={rss_mb:.0f}"]  # fmt: skip
    print("\nRESULT " + " ".join(parts))
    return 0


async def _breakdown(
    setups: list[Setup], mode: str, n: int, request: Request, sink: str
) -> list[tuple[str, float]]:
    """Each piece of the full path timed alone: thread CPU per call, in microseconds."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    full = setups[FULL]
    off, metrics, spool = (
        setups[LAYER_KEYS["settle"]],
        setups[LAYER_KEYS["metrics"]],
        setups[LAYER_KEYS["spool"]],
    )
    accountant = full.runtime.accountant
    principal = full.principal
    rows: list[tuple[str, float]] = []

    def timed(label: str, fn: Any, items: list[Any]) -> None:
        t0 = time.thread_time()
        for item in items:
            fn(item)
        rows.append((label, (time.thread_time() - t0) / len(items) * 1e6))

    def contexts(traced: Setup | None = None) -> list[tuple[RequestContext, ProviderResponse]]:
        made = []
        for i in range(n):
            ctx, response = _make(mode, request, i)
            ctx.principal = principal
            ctx.deployment = full.runtime.config.models[MODEL].deployments[0]
            ctx.served_by, ctx.served_model = f"{MODEL}#0", MODEL
            if traced is not None:
                traced.runtime.telemetry.start(ctx)
            made.append((ctx, response))
        return made

    items = contexts()
    usages = [accountant._usage(ctx, response) for ctx, response in items]
    items = contexts()
    timed("usage from the response (`Accountant._usage`)", lambda it: accountant._usage(*it), items)
    reports = []

    def cost(i: int) -> None:
        reports.append(
            cost_request(
                items[i][0], usages[i][0], accountant.prices, outcome="ok", baseline_price=accountant.baseline
            )
        )

    timed("cost report (`cost_request`)", cost, list(range(n)))
    ledger_rows: list[dict[str, Any]] = []
    timed(
        "ledger row dict (`ledger_row`)",
        lambda i: ledger_rows.append(
            ledger_row(items[i][0], reports[i], status=200, outcome="ok", error_type=None)
        ),
        list(range(n)),
    )
    await spool.runtime.ledger.flush()
    timed("`Ledger.submit`, spool on (orjson + os.write)", spool.runtime.ledger.submit, ledger_rows)
    t0 = time.process_time()
    await spool.runtime.ledger.flush()
    rows.append(("ledger batch into SQLite, per row (process CPU)", (time.process_time() - t0) / n * 1e6))

    def finish(telemetry: Telemetry) -> Any:
        return lambda i: telemetry.finish(items[i][0], reports[i], status=200, outcome="ok", error_type=None)

    timed("metrics, `telemetry: {enabled: false}` (`finish`)", finish(off.runtime.telemetry), list(range(n)))
    timed("metrics, Prometheus reader (`finish`, no span)", finish(metrics.runtime.telemetry), list(range(n)))

    # Spans: the request span's start, the stage span, and the request span's end.
    telemetry = full.runtime.telemetry
    items = contexts()
    timed("request span start (`Telemetry.start`)", lambda it: telemetry.start(it[0]), items)
    plain_chain, traced_chain = metrics.chain, full.chain

    async def chain_cost(chain: Any) -> float:
        t0 = time.thread_time()
        for ctx, response in items:
            _CURRENT[0] = response
            await chain(ctx)
        return (time.thread_time() - t0) / n * 1e6

    without = await chain_cost(plain_chain)
    with_span = await chain_cost(traced_chain)
    rows.append(("stage span (`Telemetry.around`), start + end", with_span - without))
    t0 = time.thread_time()
    for i, (ctx, _) in enumerate(items):
        telemetry.finish(ctx, reports[i], status=200, outcome="ok", error_type=None, finish_reasons=["stop"])
    traced_finish = (time.thread_time() - t0) / n * 1e6
    metrics_only = next(us for label, us in rows if label.startswith("metrics, Prometheus"))
    rows.append(("request span end (`finish` with a span - without)", traced_finish - metrics_only))

    # The exporter's thread: the same spans, captured, then encoded and posted as it would.
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    capture = Telemetry(telemetry.config, tracer_provider=provider)
    capture_chain = capture.around(_AuthLike(principal), metrics_chain_terminal(full))
    for i in range(n):
        ctx, response = _make(mode, request, i)
        capture.start(ctx)
        _CURRENT[0] = response
        await capture_chain(ctx)
        capture.finish(ctx, reports[i], status=200, outcome="ok", error_type=None, finish_reasons=["stop"])
    spans = list(memory.get_finished_spans())
    batches = [spans[i : i + 512] for i in range(0, len(spans), 512)]
    t0 = time.thread_time()
    payloads = [encode_spans(batch).SerializePartialToString() for batch in batches]
    rows.append((f"span export: protobuf encoding ({len(spans) / n:.0f} spans/request)",
                 (time.thread_time() - t0) / n * 1e6))  # fmt: skip
    exporter = OTLPSpanExporter(endpoint=f"{sink}/v1/traces")
    t0 = time.thread_time()
    for payload in payloads:
        exporter._client.export(payload)
    rows.append(
        ("span export: HTTP post to the receiver (batches of 512)", (time.thread_time() - t0) / n * 1e6)
    )
    exporter.shutdown()  # type: ignore[no-untyped-call]
    provider.shutdown()
    capture.shutdown()
    return rows


def _print_breakdown(mode: str, n: int, rounds: list[list[tuple[str, float]]]) -> None:
    labels = [label for label, _ in rounds[0]]
    values = {label: [dict(r)[label] for r in rounds] for label in labels}
    print(f"\n# breakdown, {mode}: thread CPU us per request, each piece alone over {n} calls; "
          f"median (min-max) of {len(rounds)} rounds")  # fmt: skip
    print("| piece | us/request |\n|---|---:|")
    for label in labels:
        v = values[label]
        print(f"| {label} | {statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f}) |")
    total = sum(
        statistics.median(values[label]) for label in labels if not label.startswith("metrics, `telemetry")
    )
    print(f"| sum (all but the telemetry-off metrics row) | {total:.1f} |")


def metrics_chain_terminal(setup: Setup) -> CallNext:
    deployment = setup.runtime.config.models[MODEL].deployments[0]

    async def terminal(ctx: RequestContext) -> ProviderResponse:
        ctx.deployment = deployment
        ctx.served_by = f"{MODEL}#0"
        ctx.served_model = MODEL
        return _CURRENT[0]

    return terminal


def _profile_exports(telemetry: Telemetry) -> cProfile.Profile | None:
    """Profile the span exporter's `export` calls, on the exporter's own thread."""
    provider = telemetry._tracer_provider
    if provider is None:
        return None
    profiler = cProfile.Profile(time.thread_time)
    for processor in provider._active_span_processor._span_processors:
        batch = getattr(processor, "_batch_processor", None)
        if batch is None:
            continue
        export = batch._exporter.export
        batch._exporter.export = lambda spans, export=export: profiler.runcall(export, spans)
    return profiler


def _print_profile(profiler: cProfile.Profile, n: int, top: int, unprofiled_us: float) -> None:
    """Top functions by own time. cProfile's per-call cost inflates every figure, so each is
    also given as a share of the thread's profiled total and scaled to its unprofiled CPU."""
    stats = pstats.Stats(profiler)
    entries = []
    for (file, line, func), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        short = file.replace(str(ROOT) + "/", "")
        if "site-packages/" in short:
            short = short.split("site-packages/", 1)[1]
        elif "/lib/python3" in short:
            short = short.split("/lib/", 1)[1]
        entries.append((tottime, cumtime, calls, f"{short}:{line}({func})"))
    total = sum(entry[0] for entry in entries) or 1.0
    print(f"profiled total {total / n * 1e6:.1f} us/req; unprofiled {unprofiled_us:.1f} us/req\n")
    print("| function | calls/req | own share | own us/req (scaled) | cumulative us/req (scaled) |")
    print("|---|---:|---:|---:|---:|")
    scale = unprofiled_us / (total / n * 1e6)
    for tottime, cumtime, calls, name in sorted(entries, reverse=True)[:top]:
        print(f"| {name} | {calls / n:.2f} | {tottime / total:.1%} | {tottime / n * 1e6 * scale:.2f} "
              f"| {cumtime / n * 1e6 * scale:.2f} |")  # fmt: skip


# --- end to end, with the shared overhead harness -------------------------------------

HARNESS = ROOT.parent / "shared" / "bench" / "gateway_overhead.py"
HARNESS_PORT = 29300
MASTER_KEY = "tg-master-accounting-bench"
# name -> (tree: "plain" or "main", environment for bench/overhead.yaml and the gateway)
HARNESS_CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "plain-mem": ("plain", {"TOLLGATE_BENCH_STORE": "memory", "TOLLGATE_BENCH_AUTH": "false"}),
    "plain": ("plain", {"TOLLGATE_BENCH_STORE": "sqlite", "TOLLGATE_BENCH_AUTH": "true"}),
    "main-off": ("main", {"TOLLGATE_BENCH_STORE": "sqlite", "TOLLGATE_BENCH_AUTH": "true",
                          "TOLLGATE_BENCH_POLICY": "false",
                          "TOLLGATE_BENCH_SPOOL": "false", "TOLLGATE_BENCH_TELEMETRY": "false"}),
    "main-full": ("main", {"TOLLGATE_BENCH_STORE": "sqlite", "TOLLGATE_BENCH_AUTH": "true",
                           "TOLLGATE_BENCH_POLICY": "false",
                           "TOLLGATE_BENCH_SPOOL": "true", "TOLLGATE_BENCH_TELEMETRY": "true",
                           "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none"}),
    "main-metrics": ("main", {"TOLLGATE_BENCH_STORE": "sqlite", "TOLLGATE_BENCH_AUTH": "true",
                              "TOLLGATE_BENCH_POLICY": "false",
                              "TOLLGATE_BENCH_SPOOL": "true", "TOLLGATE_BENCH_TELEMETRY": "true",
                              "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}),
    "main-mem": ("main", {"TOLLGATE_BENCH_STORE": "memory", "TOLLGATE_BENCH_AUTH": "false",
                          "TOLLGATE_BENCH_POLICY": "false"}),
}  # fmt: skip


def _serve_command(tree: Path, config: Path, port: int) -> str:
    """Shell command that runs `tree`'s gateway on `config`."""
    python = ROOT / ".venv" / "bin" / "python"
    # `-m gateway` from inside the tree: its own package comes first on sys.path.
    return f"cd {tree} && exec {python} -m gateway serve --config {config} --port {port}"


def _http(url: str, body: dict[str, Any] | None = None, key: str | None = None) -> dict[str, Any]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    data = None if body is None else orjson.dumps(body)
    req = urllib.request.Request(
        url, data=data, headers=headers, method="POST" if body is not None else "GET"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(orjson.loads(resp.read()))


def _make_key(command: str, env: dict[str, str], port: int) -> str:
    """Start the gateway once on its SQLite store, create a team and a virtual key, stop it."""
    proc = subprocess.Popen(["bash", "-c", command], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _http(f"http://127.0.0.1:{port}/readyz")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"gateway did not start: {command}") from None
                time.sleep(0.1)
        _http(f"http://127.0.0.1:{port}/admin/teams", {"id": "bench"}, MASTER_KEY)
        return str(_http(f"http://127.0.0.1:{port}/admin/keys", {"team": "bench"}, MASTER_KEY)["key"])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _ledger_rows(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return -1
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM log WHERE log = 'ledger'").fetchone()[0])


def _harness(args: argparse.Namespace, extra: list[str]) -> int:
    if not HARNESS.exists():
        raise SystemExit(f"{HARNESS} missing")
    names = [name.strip() for name in args.configs.split(",") if name.strip()]
    plain_tree = Path(args.plain_tree).resolve() if args.plain_tree else None
    main_tree = Path(args.main_tree).resolve() if args.main_tree else ROOT
    if plain_tree is None:
        names = [name for name in names if HARNESS_CONFIGS[name][0] != "plain"]
    elif not (plain_tree / "gateway").is_dir():
        raise SystemExit(f"--plain-tree {plain_tree}: no gateway package there")
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-acct-harness-"))
    sink_port = _free_port()
    # The receiver stands for a collector on another machine: off the gateway's core.
    sink = _start_sink(sink_port)
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    notes: list[str] = []
    try:
        for rep in range(args.repeat):
            for name in names:
                tree_name, config_env = HARNESS_CONFIGS[name]
                tree = plain_tree if tree_name == "plain" else main_tree
                assert tree is not None
                # The plain tree reads its own copy (it knows fewer settings); the others this one.
                config = (tree if tree_name == "plain" else ROOT) / "bench" / "overhead.yaml"
                db = tmp / f"{name}-{rep}.db"
                env = {**os.environ, **config_env, "TOLLGATE_BENCH_DB": str(db), "TOLLGATE_MASTER_KEY": MASTER_KEY,
                       "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                       "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # fmt: skip
                if "OTEL_TRACES_EXPORTER" not in config_env:
                    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT")
                key = "sk-unused"
                if config_env.get("TOLLGATE_BENCH_AUTH") == "true":
                    key = _make_key(_serve_command(tree, config, HARNESS_PORT),
                                    {**env, "MOCK_BASE_URL": "http://127.0.0.1:9/v1"}, HARNESS_PORT)  # fmt: skip
                out = tmp / f"{name}-{rep}.json"
                spans0 = _sink_stats(sink_port)["spans"]
                cmd = [sys.executable, str(HARNESS), "--name", name, "--url", f"http://127.0.0.1:{HARNESS_PORT}/v1",
                       "--start", _serve_command(tree, config, HARNESS_PORT), "--api-key", key, "--peers", "direct",
                       "--json", str(out), *extra]  # fmt: skip
                print(f"# [{rep + 1}/{args.repeat}] {name}: {' '.join(cmd[1:])}", flush=True)
                run = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if run.returncode != 0 or not out.exists():
                    print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
                    raise SystemExit(f"harness failed for {name}")
                data = orjson.loads(out.read_bytes())
                for row in data["results"]:
                    if row["target"] == name:
                        results.setdefault((name, rep), []).append(row)
                spans = _sink_stats(sink_port)["spans"] - spans0
                stored = _ledger_rows(db)
                served = sum(row["requests"] for row in results.get((name, rep), []))
                notes.append(f"{name} run {rep + 1}: {served} requests measured, ledger rows in SQLite "
                             f"{stored if stored >= 0 else '-'}, spans received {spans}")  # fmt: skip
                print("  " + notes[-1], flush=True)
                for line in run.stdout.splitlines():
                    if line.startswith("| ") and f" {name} " in line:
                        print("  " + line, flush=True)
    finally:
        sink.terminate()
        sink.wait(timeout=10)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    cells: dict[tuple[str, str, int], list[float]] = {}
    for (name, _), rows in results.items():
        for row in rows:
            if row["gw_cpu_ms_per_req"] is not None:
                cells.setdefault((name, row["mode"], row["conc"]), []).append(row["gw_cpu_ms_per_req"])
    keys = sorted({(mode, conc) for (_, mode, conc) in cells}, key=lambda k: (k[0] != "nonstream", k[1]))
    print("\n# gw CPU-ms per request (= harness gw CPU-s/1k req); each cell: runs, comma-separated")
    print("| mode | conc | " + " | ".join(names) + " | main-full - plain | main-full - plain-mem |")
    print("|---|---:|" + "---|" * len(names) + "---:|---:|")
    deltas: dict[str, list[float]] = {"plain": [], "plain-mem": []}
    for mode, conc in keys:
        row = [mode, str(conc)]
        for name in names:
            values = cells.get((name, mode, conc), [])
            row.append(", ".join(f"{v:.3f}" for v in values) or "-")
        for base in ("plain", "plain-mem"):
            full, plain = cells.get(("main-full", mode, conc)), cells.get((base, mode, conc))
            if full and plain:
                delta = statistics.mean(full) - statistics.mean(plain)
                deltas[base].append(delta)
                row.append(f"{delta:+.3f}")
            else:
                row.append("-")
        print("| " + " | ".join(row) + " |")
    for note in notes:
        print(f"# {note}")
    parts = []
    for base, label in (
        ("plain", "harness_added_cpu_ms"),
        ("plain-mem", "harness_added_vs_plain_mem_cpu_ms"),
    ):
        if deltas[base]:
            parts.append(f"{label}_mean={statistics.mean(deltas[base]):.3f}")
            parts.append(f"{label}_max={max(deltas[base]):.3f}")
    if parts:
        worst = max(max(values) for values in deltas.values() if values)
        print("\nRESULT " + " ".join(parts) + f" target_cpu_ms=0.3 meets_target={str(worst <= 0.3).lower()}")
    return 0


def _thread_ticks(pid: int) -> dict[int, int]:
    ticks = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            ticks[int(task.name)] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


def _wrk(url: str, key: str, body: Path, conc: int, seconds: int) -> int:
    lua = HARNESS.parent / "wrk_post.lua"
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "--timeout", "10s", "-s", str(lua),
         "-H", f"Authorization: Bearer {key}", url],
        env={**os.environ, "WRK_BODY_FILE": str(body)}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(orjson.loads(out.split("WRK_JSON", 1)[1].strip().splitlines()[0])["requests"])


def _split(args: argparse.Namespace) -> int:
    """Per-thread CPU of the serving gateway: the event loop, the span exporter, the SQLite writer."""
    mock_bin = Path(os.environ.get("GWBENCH_WORK", "/tmp/gwbench")) / "bin" / "mock_upstream"
    if not mock_bin.exists() or not shutil.which("wrk"):
        raise SystemExit(f"needs wrk and {mock_bin}: python3 {HARNESS} --install")
    names = [name.strip() for name in args.configs.split(",") if name.strip()]
    plain_tree = Path(args.plain_tree).resolve() if args.plain_tree else None
    main_tree = Path(args.main_tree).resolve() if args.main_tree else ROOT
    if plain_tree is None:
        names = [name for name in names if HARNESS_CONFIGS[name][0] != "plain"]
    modes = ("nonstream", "stream") if args.mode == "both" else (args.mode,)
    tmp = Path(tempfile.mkdtemp(prefix="tollgate-acct-split-"))
    bodies = {}
    for mode in modes:
        body = dict(
            REQUEST_BODY,
            **({"stream": True, "stream_options": {"include_usage": True}} if mode == "stream" else {}),
        )
        bodies[mode] = tmp / f"{mode}.json"
        bodies[mode].write_bytes(orjson.dumps(body))
    mock_port, sink_port = _free_port(), _free_port()
    mock = subprocess.Popen(["taskset", "-c", "1", str(mock_bin), "-addr", f"127.0.0.1:{mock_port}", "-chunks", "20"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    sink = _start_sink(sink_port)
    rows: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    try:
        for rep in range(args.repeat):
            for name in names:
                tree_name, config_env = HARNESS_CONFIGS[name]
                tree = plain_tree if tree_name == "plain" else main_tree
                assert tree is not None
                config = (tree if tree_name == "plain" else ROOT) / "bench" / "overhead.yaml"
                env = {**os.environ, **config_env, "TOLLGATE_BENCH_DB": str(tmp / f"{name}-{rep}.db"),
                       "TOLLGATE_MASTER_KEY": MASTER_KEY, "MOCK_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
                       "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                       "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # fmt: skip
                if config_env.get("OTEL_TRACES_EXPORTER") != "otlp":
                    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT")
                command = _serve_command(tree, config, HARNESS_PORT)
                key = (
                    _make_key(command, env, HARNESS_PORT)
                    if config_env.get("TOLLGATE_BENCH_AUTH") == "true"
                    else "x"
                )
                gateway = subprocess.Popen(["taskset", "-c", "0", "bash", "-c", command], env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
                try:
                    deadline = time.monotonic() + 60
                    while True:
                        try:
                            _http(f"http://127.0.0.1:{HARNESS_PORT}/readyz")
                            break
                        except OSError:
                            if time.monotonic() > deadline or gateway.poll() is not None:
                                raise SystemExit(f"gateway did not start: {command}") from None
                            time.sleep(0.1)
                    url = f"http://127.0.0.1:{HARNESS_PORT}/v1/chat/completions"
                    for mode in modes:
                        _wrk(url, key, bodies[mode], args.split_conc, 3)
                        t0 = _thread_ticks(gateway.pid)
                        n = _wrk(url, key, bodies[mode], args.split_conc, args.split_seconds)
                        t1 = _thread_ticks(gateway.pid)
                        per = {
                            tid: (t1[tid] - t0.get(tid, 0)) / os.sysconf("SC_CLK_TCK") * 1000 / n
                            for tid in t1
                        }
                        loop = per.pop(gateway.pid, 0.0)
                        others = sorted(per.values(), reverse=True)
                        rows.setdefault((name, mode), []).append(
                            (loop + sum(others), loop, others[0] if others else 0.0, sum(others[1:]))
                        )
                        print(f"# [{rep + 1}/{args.repeat}] {name} {mode}: {n / args.split_seconds:.0f} req/s, "
                              f"{loop + sum(others):.3f} CPU-ms/req (loop {loop:.3f}, other threads "
                              f"{', '.join(f'{v:.3f}' for v in others if v)})", flush=True)  # fmt: skip
                finally:
                    os.killpg(gateway.pid, signal.SIGTERM)
                    try:
                        gateway.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        os.killpg(gateway.pid, signal.SIGKILL)
    finally:
        for proc in (sink, mock):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n# per-thread CPU-ms per request, c={args.split_conc}, {args.split_seconds} s per run; "
          "median (min-max) over runs; the busiest other thread is the span exporter's when there is one")  # fmt: skip
    print(
        "| config | mode | total | event loop | busiest other thread | the rest |\n|---|---|---:|---:|---:|---:|"
    )
    for (name, mode), values in rows.items():
        cells = []
        for i in range(4):
            column = [v[i] for v in values]
            cells.append(f"{statistics.median(column):.3f} ({min(column):.3f}-{max(column):.3f})")
        print(f"| {name} | {mode} | " + " | ".join(cells) + " |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=6000, help="requests per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mem-n", type=int, default=2000, help="requests per tracemalloc pass")
    ap.add_argument("--mode", choices=("both", "nonstream", "stream"), default="both")
    ap.add_argument("--profile", choices=tuple(LAYER_KEYS), help="cProfile this layer instead of the table")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--breakdown", action="store_true", help="time each piece of the path on its own")
    ap.add_argument("--harness", action="store_true", help="end to end with the shared overhead harness")
    ap.add_argument("--plain-tree", help="a worktree of the plain proxy (commit e7f24d6) for --harness")
    ap.add_argument("--main-tree", help="--harness: the code for the main-* runs (default: this tree)")
    ap.add_argument("--configs", default="plain-mem,plain,main-off,main-full,main-mem",
                    help=f"--harness configurations, from {','.join(HARNESS_CONFIGS)}")  # fmt: skip
    ap.add_argument(
        "--repeat", type=int, default=1, help="--harness, --split: rounds over the configurations"
    )
    ap.add_argument("--split", action="store_true", help="per-thread CPU of the serving gateway under wrk")
    ap.add_argument("--split-conc", type=int, default=16)
    ap.add_argument("--split-seconds", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="--harness: keep the JSON results and databases")
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = ap.parse_args(argv)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if args.harness:
        return _harness(args, extra)
    if args.split:
        return _split(args)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
