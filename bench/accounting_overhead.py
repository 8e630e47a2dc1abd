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

End to end, in a serving gateway beside the plain proxy: bench/accounting_harness.py.

`--breakdown` times each piece of the path on its own, without a profiler's distortion:
usage, cost, ledger row, spool write, the SQLite batch per row, metrics (with and without a
reader), the request span's start and end, the stage span, and the exporter's protobuf
encoding and HTTP post per request; in microseconds per request (`--mode` picks the shape).

`--profile LAYER` runs cProfile over that layer and prints the top functions in
microseconds per request (cProfile's own overhead inflates them: compare, do not add).
The last line is `RESULT accounting_tracing_cpu_ms=...`: what the full stack (tracing
row) costs beyond the loop-only row, per non-streamed request, the larger of the two modes
in `..._max_cpu_ms`. It is the work itself, in isolation; in a serving gateway the same work
costs more (see bench/accounting_harness.py, whose RESULT line carries the verdict).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from bench.accounting_fixture import (  # noqa: E402
    _CURRENT,
    FULL,
    LAYER_KEYS,
    LAYERS,
    MODEL,
    Setup,
    _AuthLike,
    _drive,
    _make,
    _measure,
    _peak_kib,
    _requests,
    _setup,
    _sink_stats,
    _start_sink,
)
from gateway.accounting.costing import cost_request  # noqa: E402
from gateway.accounting.settle import ledger_row  # noqa: E402
from gateway.demo.processes import free_port  # noqa: E402
from gateway.pipeline import CallNext, Request, RequestContext  # noqa: E402
from gateway.providers.base import ProviderResponse  # noqa: E402
from gateway.telemetry import Telemetry  # noqa: E402


async def _main(args: argparse.Namespace) -> int:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[0]})  # the gateway's core; the sink gets another
    port = free_port()
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
                    print("\n## span exporter thread (the batch processor's export)")
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
    # In process only: the end-to-end figure (and the verdict) comes from bench/accounting_harness.py.
    parts += [f"accounting_tracing_max_cpu_ms={max(added.values()):.4f}", "scope=in_process",
              "target_cpu_ms=0.3", f"peak_rss_mb={rss_mb:.0f}"]  # fmt: skip
    print("\nRESULT " + " ".join(parts))
    return 0


async def _breakdown(
    setups: list[Setup], mode: str, n: int, request: Request, sink: str
) -> list[tuple[str, float]]:
    """Each piece of the full path timed alone: thread CPU per call, in microseconds."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from gateway.telemetry.otlp import OtlpHttpSpanExporter, SpanEncoder

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
    rows.append(
        ("request span end, its spans encoded (`finish` with a span - without)", traced_finish - metrics_only)
    )

    # For comparison, the same spans as the SDK's span objects (what gRPC and console get),
    # captured and encoded by the SDK's encoder and by ours; then the exporter thread's post.
    memory = InMemorySpanExporter()
    capture = Telemetry(telemetry.config, span_processors=[SimpleSpanProcessor(memory)])
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
    [encode_spans(batch).SerializePartialToString() for batch in batches]
    rows.append((f"not used: the SDK's encoder on `ReadableSpan`s ({len(spans) / n:.0f} spans/request)",
                 (time.thread_time() - t0) / n * 1e6))  # fmt: skip
    encoder = SpanEncoder()
    t0 = time.thread_time()
    payloads = [encoder.encode(batch) for batch in batches]
    rows.append((f"not used: `SpanEncoder.encode` on `ReadableSpan`s ({len(spans) / n:.0f} spans/request)",
                 (time.thread_time() - t0) / n * 1e6))  # fmt: skip
    exporter = OtlpHttpSpanExporter(endpoint=f"{sink}/v1/traces")
    t0 = time.thread_time()
    for payload in payloads:
        exporter._client.export(payload)
    rows.append(
        ("span export: HTTP post to the receiver (batches of 512)", (time.thread_time() - t0) / n * 1e6)
    )
    exporter.shutdown()  # type: ignore[no-untyped-call]
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
        statistics.median(values[label])
        for label in labels
        if not label.startswith(("metrics, `telemetry", "not used"))
    )
    print(f"| sum (all but the telemetry-off metrics row and those not used) | {total:.1f} |")


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
    tracer = telemetry._tracer
    if tracer is None:
        return None
    profiler = cProfile.Profile(time.thread_time)
    for processor in tracer._all:
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=6000, help="requests per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mem-n", type=int, default=2000, help="requests per tracemalloc pass")
    ap.add_argument("--mode", choices=("both", "nonstream", "stream"), default="both")
    ap.add_argument("--profile", choices=tuple(LAYER_KEYS), help="cProfile this layer instead of the table")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--breakdown", action="store_true", help="time each piece of the path on its own")
    args = ap.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
