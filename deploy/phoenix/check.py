"""Send the gateway's traces to a real Arize Phoenix and read them back through its REST API.

Run it with the project's interpreter (it starts the gateway from this checkout); Phoenix runs
from its own virtual environment, because its dependencies conflict with the gateway's:

    .venv/bin/python deploy/phoenix/check.py --phoenix .venv-phoenix/bin/phoenix

(`make phoenix-check` builds both environments and runs exactly that.)

What happens, all on 127.0.0.1 and free ports, with nothing reaching the network:
1. Phoenix starts with a throwaway working directory (its SQLite database lives there).
2. The gateway starts with no config file (the embedded defaults serve `sim/*` models
   in-process) and only the standard OTEL_* variables pointing it at Phoenix's OTLP/HTTP
   receiver (`http://127.0.0.1:<port>/v1/traces`).
3. The official `openai` SDK sends a few chat requests, one of them streamed; each answer's
   `x-request-id` and cost figures are kept (a stream carries its figures in the
   `: tollgate {...}` SSE comment before `data: [DONE]`, since its headers leave first).
4. The spans are read back from `GET /v1/projects/tollgate/spans` until every request's root
   span and its stage children have arrived, and each root span's cost attributes are
   compared with what the client was told.

Exit status 0 when everything matches, 1 on any mismatch (each one is printed), 2 when
Phoenix or the gateway cannot be started.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
import openai

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "tollgate"
MASTER_KEY = "tg-phoenix-check-master-key"
COST_ATTRIBUTES = ("tollgate.cost_usd", "tollgate.baseline_usd", "tollgate.saved_usd")


# Beside this file; run as a script, its directory is first on sys.path.
from processes import CheckFailed, Proc, clean_env, spawn, wait_http_ok  # noqa: E402

from gateway.demo.processes import free_port  # noqa: E402

# --- requests -------------------------------------------------------------------------------


@dataclass
class Sent:
    label: str
    stream: bool
    model: str
    request_id: str
    # The figures the client was given: response headers, or a stream's SSE cost comment.
    figures: dict[str, str]
    input_tokens: int
    output_tokens: int
    problems: list[str] = field(default_factory=list)


class _TeeStream(httpx.SyncByteStream):
    """Hands the SDK every byte unchanged and keeps a copy (the SDK drops SSE comments)."""

    def __init__(self, inner: httpx.SyncByteStream, sink: bytearray) -> None:
        self._inner, self._sink = inner, sink

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._sink.extend(chunk)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _TeeTransport(httpx.BaseTransport):
    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.last_body = bytearray()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        self.last_body = bytearray()
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_TeeStream(response.stream, self.last_body),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._inner.close()


def _cost_comment(body: bytes) -> dict[str, str]:
    for line in body.decode(errors="replace").splitlines():
        if line.startswith(": tollgate "):
            figures: dict[str, str] = json.loads(line[len(": tollgate ") :])
            return figures
    return {}


def send_requests(base_url: str, model: str) -> list[Sent]:
    transport = _TeeTransport()
    client = openai.OpenAI(
        base_url=base_url, api_key=MASTER_KEY, max_retries=0, timeout=60,
        http_client=httpx.Client(transport=transport),
    )  # fmt: skip
    sent: list[Sent] = []
    prompts = (
        ("plain", "Name three prime numbers."),
        ("plain", "Explain what a gateway does, in one paragraph."),
    )
    with client:
        for label, prompt in prompts:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": prompt}], max_tokens=64
            )
            completion = raw.parse()
            usage = completion.usage
            figures = {
                "cost_usd": raw.headers.get("x-tollgate-cost-usd", ""),
                "baseline_usd": raw.headers.get("x-tollgate-baseline-usd", ""),
                "saved_usd": raw.headers.get("x-tollgate-saved-usd", ""),
            }
            sent.append(Sent(
                label, False, model, raw.headers.get("x-request-id", ""), figures,
                usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
            ))  # fmt: skip

        raw_stream = client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": "Write a haiku about invoices."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        request_id = raw_stream.headers.get("x-request-id", "")
        usage = None
        for chunk in raw_stream.parse():
            if chunk.usage is not None:
                usage = chunk.usage
        comment = _cost_comment(bytes(transport.last_body))
        streamed = Sent(
            "stream", True, model, request_id, comment,
            usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
        )  # fmt: skip
        if usage is None:
            streamed.problems.append("the stream carried no usage chunk despite include_usage")
        if not comment:
            streamed.problems.append("the stream carried no `: tollgate {...}` cost comment")
        elif comment.get("request_id") != request_id:
            streamed.problems.append(
                f"cost comment names request {comment.get('request_id')!r}, headers say {request_id!r}"
            )
        sent.append(streamed)
    for item in sent:
        if not item.request_id:
            item.problems.append("the response had no x-request-id header")
    return sent


# --- reading back from Phoenix ----------------------------------------------------------------


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def project_spans(phoenix: str, project: str) -> list[dict[str, Any]]:
    """Every span of a project (empty while the project does not exist yet)."""
    spans: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        url = f"{phoenix}/v1/projects/{urllib.parse.quote(project, safe='')}/spans?{urllib.parse.urlencode(query)}"
        try:
            page = _get_json(url)
        except urllib.error.HTTPError as err:
            if err.code == 404:  # Phoenix creates a project with its first span
                return []
            raise
        spans.extend(page.get("data") or [])
        cursor = page.get("next_cursor")
        if not cursor:
            return spans


def _roots_and_children(
    spans: list[dict[str, Any]], request_ids: set[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    roots: dict[str, dict[str, Any]] = {}
    for span in spans:
        rid = span.get("attributes", {}).get("tollgate.request_id")
        if rid in request_ids and span.get("parent_id") is None:
            roots[rid] = span
    children: dict[str, list[dict[str, Any]]] = {rid: [] for rid in roots}
    by_span_id = {root["context"]["span_id"]: rid for rid, root in roots.items()}
    for span in spans:
        rid = by_span_id.get(span.get("parent_id") or "")
        if rid is not None:
            children[rid].append(span)
    return roots, children


def wait_for_spans(
    phoenix: str, request_ids: set[str], timeout_s: float
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]], float]:
    started = time.monotonic()
    roots: dict[str, dict[str, Any]] = {}
    children: dict[str, list[dict[str, Any]]] = {}
    while time.monotonic() - started < timeout_s:
        roots, children = _roots_and_children(project_spans(phoenix, PROJECT), request_ids)
        if set(roots) == request_ids and all(children[rid] for rid in request_ids):
            break
        time.sleep(0.25)
    return roots, children, time.monotonic() - started


def where_else(phoenix: str, request_ids: set[str]) -> str:
    """When spans are missing from the expected project: which projects hold them, if any."""
    found: list[str] = []
    for project in _get_json(f"{phoenix}/v1/projects").get("data") or []:
        name = project.get("name", "")
        if name == PROJECT:
            continue
        hits = [
            s for s in project_spans(phoenix, project.get("id") or name)
            if s.get("attributes", {}).get("tollgate.request_id") in request_ids
        ]  # fmt: skip
        if hits:
            found.append(f"{len(hits)} in project {name!r}")
    if found:
        return (
            "the spans landed elsewhere: "
            + ", ".join(found)
            + f" (Phoenix files spans by the resource attribute openinference.project.name={PROJECT})"
        )
    return "no span with these request ids reached Phoenix at all"


# --- comparing ------------------------------------------------------------------------------


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except (InvalidOperation, TypeError):
        return None


def _same_amount(told: str, recorded: Any) -> bool:
    """The client's exact decimal against the span's double: equal to the double's precision."""
    amount = _decimal(told)
    if amount is None or not isinstance(recorded, int | float) or isinstance(recorded, bool):
        return False
    return math.isclose(float(amount), float(recorded), rel_tol=1e-12, abs_tol=1e-15)


def compare(item: Sent, root: dict[str, Any] | None, children: list[dict[str, Any]]) -> None:
    problems = item.problems
    if root is None:
        problems.append(f"no root span with tollgate.request_id={item.request_id!r}")
        return
    attrs: dict[str, Any] = root.get("attributes", {})
    expected_name = f"chat {item.model}"
    if root.get("name") != expected_name:
        problems.append(f"root span is named {root.get('name')!r}, expected {expected_name!r}")
    for key, figure in zip(COST_ATTRIBUTES, ("cost_usd", "baseline_usd", "saved_usd"), strict=True):
        value = attrs.get(key)
        if value is None:
            problems.append(f"{key} is missing from the span")
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            problems.append(f"{key} is {type(value).__name__} {value!r}, not a number")
            continue
        told = item.figures.get(figure, "")
        if not told:
            problems.append(f"the client was not told {figure}")
        elif told == "unknown":
            problems.append(f"the client was told {figure}=unknown (the model has no price)")
        elif not _same_amount(told, value):
            problems.append(f"{key}: span has {value!r}, the client was told {told}")
    for key, want in (
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.request.model", item.model),
    ):
        if attrs.get(key) != want:
            problems.append(f"{key} is {attrs.get(key)!r}, expected {want!r}")
    for key in ("gen_ai.provider.name", "gen_ai.response.model", "tollgate.team"):
        if not attrs.get(key):
            problems.append(f"{key} is missing from the span")
    for key, client_count in (
        ("gen_ai.usage.input_tokens", item.input_tokens),
        ("gen_ai.usage.output_tokens", item.output_tokens),
    ):
        value = attrs.get(key)
        if not isinstance(value, int) or value <= 0:
            problems.append(f"{key} is {value!r}, expected a positive integer")
        elif client_count and value != client_count:
            problems.append(f"{key} is {value}, the response's usage said {client_count}")
    if not children:
        problems.append("the root span has no child (stage) spans in Phoenix")
    trace_id = root.get("context", {}).get("trace_id")
    for child in children:
        if child.get("context", {}).get("trace_id") != trace_id:
            problems.append(f"child span {child.get('name')!r} is in another trace")


def print_table(
    sent: list[Sent], roots: dict[str, dict[str, Any]], children: dict[str, list[dict[str, Any]]]
) -> None:
    header = (
        "request id",
        "kind",
        "span",
        "in",
        "out",
        "cost (client)",
        "cost (span)",
        "baseline",
        "saved",
        "stage spans",
    )
    rows = [header]
    for item in sent:
        root = roots.get(item.request_id)
        attrs = root.get("attributes", {}) if root else {}
        kids = sorted({c.get("name", "") for c in children.get(item.request_id, [])})
        rows.append((
            item.request_id or "-",
            item.label,
            root.get("name", "") if root else "(missing)",
            str(attrs.get("gen_ai.usage.input_tokens", "-")),
            str(attrs.get("gen_ai.usage.output_tokens", "-")),
            item.figures.get("cost_usd") or "-",
            repr(attrs["tollgate.cost_usd"]) if "tollgate.cost_usd" in attrs else "-",
            repr(attrs["tollgate.baseline_usd"]) if "tollgate.baseline_usd" in attrs else "-",
            repr(attrs["tollgate.saved_usd"]) if "tollgate.saved_usd" in attrs else "-",
            ", ".join(kids) or "-",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  " + "  ".join("-" * width for width in widths))


# --- main -----------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> int:
    phoenix_bin = Path(args.phoenix).resolve()
    if not os.access(phoenix_bin, os.X_OK):
        raise CheckFailed(
            f"no Phoenix executable at {phoenix_bin} (run `make phoenix-check`, which builds it)"
        )
    http_port, grpc_port, gateway_port = free_port(), free_port(), free_port()
    phoenix_url = f"http://127.0.0.1:{http_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    procs: list[Proc] = []
    started = time.monotonic()
    try:
        phoenix_env = clean_env(
            PHOENIX_HOST="127.0.0.1",
            PHOENIX_PORT=str(http_port),
            PHOENIX_GRPC_PORT=str(grpc_port),
            PHOENIX_WORKING_DIR=str(workdir / "phoenix"),
            # Offline: no analytics pixels, web fonts or sandbox downloads; quiet migrations.
            PHOENIX_TELEMETRY_ENABLED="false",
            PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
            PHOENIX_LOG_MIGRATIONS="false",
        )
        procs.append(spawn("phoenix", [str(phoenix_bin), "serve"], phoenix_env, workdir))
        gateway_env = clean_env(
            TOLLGATE_MASTER_KEY=MASTER_KEY,
            TOLLGATE_DB=str(workdir / "tollgate.db"),
            OTEL_SERVICE_NAME="tollgate",
            OTEL_RESOURCE_ATTRIBUTES=f"openinference.project.name={PROJECT}",
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_METRICS_EXPORTER="none",  # Phoenix receives traces only
            OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_ENDPOINT=phoenix_url,  # the exporter appends /v1/traces
            OTEL_BSP_SCHEDULE_DELAY="200",
        )
        # Both start at once; requests wait for Phoenix, so no span is sent before it listens.
        procs.append(spawn(
            "gateway",
            [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(gateway_port)],
            gateway_env, workdir,
        ))  # fmt: skip
        gateway_ready = wait_http_ok(procs[1], f"{gateway_url}/readyz", args.start_timeout)
        phoenix_ready = wait_http_ok(procs[0], f"{phoenix_url}/healthz", args.start_timeout)
        version = urllib.request.urlopen(f"{phoenix_url}/arize_phoenix_version", timeout=5).read().decode()
        print(f"phoenix {version} ready in {phoenix_ready:.1f} s ({phoenix_url}, OTLP/HTTP at /v1/traces)")
        print(f"gateway ready in {gateway_ready:.1f} s ({gateway_url})")

        try:
            sent = send_requests(f"{gateway_url}/v1", args.model)
        except openai.OpenAIError as err:
            raise CheckFailed(f"a request through the gateway failed: {err}\n{procs[1].tail()}") from None
        ids = {item.request_id for item in sent if item.request_id}
        roots, children, waited = wait_for_spans(phoenix_url, ids, args.span_timeout)
        print(
            f"{len(sent)} requests sent; {len(roots)} root spans read back from project {PROJECT!r} in {waited:.1f} s"
        )
        for item in sent:
            compare(item, roots.get(item.request_id), children.get(item.request_id, []))
        print_table(sent, roots, children)
        if len(roots) < len(ids):
            print(f"  note: {where_else(phoenix_url, ids - set(roots))}")
        failures = [(item, p) for item in sent for p in item.problems]
        total = time.monotonic() - started
        if failures:
            print(f"\nphoenix-check FAILED ({len(failures)} problem(s), {total:.1f} s):", file=sys.stderr)
            for item, problem in failures:
                print(f"  [{item.label} {item.request_id or '?'}] {problem}", file=sys.stderr)
            print(f"  logs: {workdir}/phoenix.log, {workdir}/gateway.log", file=sys.stderr)
            return 1
        print(f"\nphoenix-check passed: every request's cost reached Phoenix intact ({total:.1f} s)")
        return 0
    finally:
        for proc in reversed(procs):
            proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--phoenix", default=str(ROOT / ".venv-phoenix" / "bin" / "phoenix"),
                        help="the `phoenix` executable (default: .venv-phoenix/bin/phoenix)")  # fmt: skip
    parser.add_argument("--model", default="sim/gpt-4o-mini")
    parser.add_argument("--start-timeout", type=float, default=120.0, help="seconds to wait for each server")
    parser.add_argument("--span-timeout", type=float, default=30.0, help="seconds to wait for the spans")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, databases)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tollgate-phoenix-"))
    code = 2
    try:
        code = run(args, workdir)
    except CheckFailed as err:
        print(f"phoenix-check: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    finally:
        if args.keep or code not in (0, 130):
            print(f"phoenix-check: logs and databases kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
