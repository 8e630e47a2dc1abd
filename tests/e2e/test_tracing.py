"""Spans (GenAI semantic conventions), trace context in and out, and Prometheus metrics.

Spans are read from an in-memory exporter on a real gateway served in this process; the
upstream's view of the trace context is read from a recorder in front of the simulator.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import openai
import orjson
import pytest

from tests.support.inproc import InProcGateway, inproc_gateway
from tests.support.procs import Proc, http
from tests.support.recorder import Recorder, recording

CONFIG = """
store: {{backend: sqlite, path: "{db}"}}
router: {{retries: 0}}
stages: {{auth: {{cache_ttl_s: 0}}}}
models:
  gpt-4o-mini:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{upstream}/v1", api_key: k, timeout_s: 5}}]
"""
HI = [{"role": "user", "content": "Tell me a secret about ledgers."}]
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def recorder(sim: Proc) -> Iterator[Recorder]:
    with recording(sim.url) as rec:
        yield rec


def _gateway(sim: Proc, recorder: Recorder, tmp: Path, *, capture_content: bool) -> Iterator[InProcGateway]:
    with inproc_gateway(CONFIG.format(db=tmp / "t.db", upstream=recorder.url), capture_content=capture_content) as gw:
        yield gw


@pytest.fixture(scope="module")
def gw(sim: Proc, recorder: Recorder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcGateway]:
    yield from _gateway(sim, recorder, tmp_path_factory.mktemp("tracing"), capture_content=False)


@pytest.fixture(scope="module")
def key(gw: InProcGateway) -> str:
    return gw.team_key("traced")


def test_a_request_span_follows_the_genai_conventions_and_carries_its_cost(gw: InProcGateway, key: str) -> None:
    client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI, max_tokens=25, temperature=0.5)
    usage = raw.parse().usage
    assert usage is not None
    span = gw.root_span(raw.headers["x-tollgate-request-id"])
    attrs = dict(span.attributes or {})
    assert span.name == "chat gpt-4o-mini"
    assert span.kind.name == "SERVER"
    assert {k: attrs[k] for k in (
        "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
        "gen_ai.request.max_tokens", "gen_ai.request.temperature", "tollgate.team",
        "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
        "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens",
    )} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai_compat",
        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.request.max_tokens": 25, "gen_ai.request.temperature": 0.5, "tollgate.team": "traced",
        "gen_ai.usage.input_tokens": usage.prompt_tokens, "gen_ai.usage.output_tokens": usage.completion_tokens,
        "gen_ai.usage.cache_read.input_tokens": 0, "gen_ai.usage.cache_creation.input_tokens": 0,
    }  # fmt: skip
    assert attrs["gen_ai.response.finish_reasons"] == ("length",)
    assert attrs["tollgate.cost_usd"] == pytest.approx(float(Decimal(raw.headers["x-tollgate-cost-usd"])), rel=1e-12)
    assert attrs["tollgate.baseline_usd"] == pytest.approx(float(Decimal(raw.headers["x-tollgate-baseline-usd"])), rel=1e-12)
    assert attrs["tollgate.saved_usd"] == 0.0
    stages = [s for s in gw.children(span) if s.name.startswith("tollgate.stage ")]
    assert sorted(s.name for s in stages) == [
        "tollgate.stage auth", "tollgate.stage compress", "tollgate.stage context", "tollgate.stage defer",
        "tollgate.stage exact_cache", "tollgate.stage policy", "tollgate.stage semantic_cache"]  # fmt: skip
    assert stages[0].context.trace_id == span.context.trace_id


def test_a_stream_span_ends_with_the_stream_and_has_its_usage(gw: InProcGateway, key: str) -> None:
    client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=HI, stream=True, stream_options={"include_usage": True}
    ) as response:
        request_id = response.headers["x-tollgate-request-id"]
        chunks = list(response.parse())
    usage = chunks[-1].usage
    assert usage is not None
    attrs = dict(gw.root_span(request_id).attributes or {})
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert 0 < attrs["gen_ai.response.time_to_first_chunk"] < 5


def test_the_clients_traceparent_is_continued_and_ours_goes_upstream(gw: InProcGateway, key: str, recorder: Recorder) -> None:
    before = recorder.count()
    client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HI, extra_headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
    )
    span = gw.root_span(raw.headers["x-tollgate-request-id"])
    assert f"{span.context.trace_id:032x}" == CLIENT_TRACE
    assert span.parent is not None and f"{span.parent.span_id:016x}" == CLIENT_SPAN
    upstream = recorder.requests()[before:]
    assert len(upstream) == 1
    assert upstream[0].headers["traceparent"] == f"00-{CLIENT_TRACE}-{span.context.span_id:016x}-01"


def test_an_upstream_error_marks_the_span_failed(gw: InProcGateway, key: str) -> None:
    client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI, extra_headers={"x-sim-fault": "503"})
    span = gw.root_span(caught.value.response.headers["x-request-id"])
    assert span.status.status_code.name == "ERROR"
    assert (span.attributes or {})["error.type"] == "upstream_unavailable" or (span.attributes or {})["error.type"]
    assert (span.attributes or {})["tollgate.cost_usd"] == 0.0


def test_prompt_text_stays_off_spans_unless_asked_and_keys_never_go_on(gw: InProcGateway, key: str) -> None:
    client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    attrs = dict(gw.root_span(raw.headers["x-tollgate-request-id"]).attributes or {})
    assert "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs
    for span in gw.spans.get_finished_spans():
        assert not any("secret about ledgers" in str(v) or key in str(v) for v in (span.attributes or {}).values())


def test_prompt_and_completion_go_on_spans_when_the_config_says_so(
    sim: Proc, recorder: Recorder, tmp_path: Path
) -> None:
    for gw in _gateway(sim, recorder, tmp_path, capture_content=True):
        key = gw.team_key("captured")
        client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
        answer = raw.parse().choices[0].message.content
        attrs = dict(gw.root_span(raw.headers["x-tollgate-request-id"]).attributes or {})
        assert "secret about ledgers" in str(attrs["gen_ai.input.messages"])
        assert orjson.loads(str(attrs["gen_ai.output.messages"])) == [{"role": "assistant", "content": answer}]
        for span in gw.spans.get_finished_spans():
            assert not any(key in str(v) for v in (span.attributes or {}).values())


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    found = False
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
            found = True
    assert found, f"no {name} with {labels} in /metrics"
    return total


def test_metrics_count_tokens_and_cost_per_team(gw: InProcGateway) -> None:
    key = gw.team_key("metered")
    client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    usage_total = [0, 0]
    cost = Decimal(0)
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
        usage = raw.parse().usage
        assert usage is not None
        usage_total[0] += usage.prompt_tokens
        usage_total[1] += usage.completion_tokens
        cost += Decimal(raw.headers["x-tollgate-cost-usd"])
    status, headers, text = http("GET", gw.url + "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = text.decode() if isinstance(text, bytes) else str(text)
    team = {"tollgate_team": "metered"}
    assert _metric(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **team) == usage_total[0]
    assert _metric(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **team) == usage_total[1]
    assert _metric(text, "gen_ai_client_token_usage_count", gen_ai_token_type="input", **team) == 3
    assert _metric(text, "tollgate_cost_usd_total", **team) == pytest.approx(float(cost), rel=1e-9)
    assert _metric(text, "gen_ai_client_operation_duration_seconds_count", tollgate_outcome="ok", **team) == 3
