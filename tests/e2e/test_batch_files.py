"""OpenAI's Files and Batch APIs on the gateway, end to end: the official SDK uploads a batch
file, the gateway runs each line through its pipeline (answering what its caches hold at
once, sending the rest to the simulated provider's Batch API), and the SDK downloads the
output and error files. Real processes, as the other end-to-end suites.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.support.deferred import submissions
from tests.support.procs import Proc, free_port, http, ledger_with, run_gateway, run_sim, sdk_client

pytestmark = pytest.mark.e2e

CONFIG = """
store: {{backend: sqlite, path: "{db}"}}
router: {{retries: 0}}
ledger: {{spool_dir: "{spool}", flush_interval_s: 0.02}}
stages:
  auth: {{cache_ttl_s: 0}}
  semantic_cache: {{enabled: false}}
  defer: {{window_s: {window_s}, tick_s: 0.1, poll_interval_s: 0.1, poll_max_s: 0.3, lease_ttl_s: {lease_ttl_s}}}
models:
  gpt-4o-mini:
    deployments: [{{provider: openai_compat, model: gpt-4o-mini, api_base: "{sim}/v1", api_key: k, timeout_s: 5}}]
  text-embedding-3-small:
    deployments: [{{provider: openai_compat, model: text-embedding-3-small, api_base: "{sim}/v1", api_key: k}}]
  sim/*:
    deployments: [{{provider: sim, model: "*", timeout_s: 5}}]
"""
MODEL = "gpt-4o-mini"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def batch_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with run_sim(tmp_path_factory.mktemp("batch-sim"), "--batch-delay-s", "0.2") as proc:
        yield proc


def _config(work: Path, sim: Proc, *, window_s: float = 0.2, lease_ttl_s: float = 120) -> str:
    return CONFIG.format(
        db=work / "t.db", spool=work / "spool", sim=sim.url, window_s=window_s, lease_ttl_s=lease_ttl_s
    )


@pytest.fixture(scope="module")
def gw(batch_sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    work = tmp_path_factory.mktemp("batch-gw")
    with run_gateway(work, _config(work, batch_sim)) as proc:
        yield proc


@pytest.fixture(scope="module")
def slow_gw(batch_sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A gateway that waits a minute before sending a provider batch: time to cancel."""
    work = tmp_path_factory.mktemp("batch-gw-slow")
    with run_gateway(work, _config(work, batch_sim, window_s=60)) as proc:
        yield proc


def _line(custom_id: str, body: dict[str, Any], url: str = CHAT) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def _chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 20, **extra}


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def _upload(client: openai.OpenAI, lines: list[dict[str, Any]] | bytes) -> str:
    content = lines if isinstance(lines, bytes) else _jsonl(lines)
    return client.files.create(file=("input.jsonl", content), purpose="batch").id


def _wait(client: openai.OpenAI, batch_id: str, until: tuple[str, ...], timeout_s: float = 45.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        assert batch.status in ("validating", "in_progress", "finalizing", "cancelling"), batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status}: {batch.request_counts}"
        time.sleep(0.1)


def _file_lines(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    content = client.files.content(file_id).content
    return {line["custom_id"]: line for line in map(orjson.loads, content.splitlines()) if line}


def _cached(client: openai.OpenAI, body: dict[str, Any]) -> None:
    """Wait until the exact cache holds `body`'s answer (entries are written after the reply)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            client.chat.completions.create(**body, extra_headers={"x-tollgate-cache": "only-if-cached"})
            return
        except openai.APIStatusError as err:
            assert err.status_code == 504, err
            assert time.monotonic() < deadline, "the answer never reached the exact cache"
            time.sleep(0.05)


def test_a_batch_file_is_answered_from_the_cache_and_the_provider_batch_api(
    gw: Proc, batch_sim: Proc
) -> None:
    client = sdk_client(gw)
    tag = uuid.uuid4().hex[:8]
    seen = _chat(f"{tag}: name a colour", temperature=0)
    client.chat.completions.create(**seen)
    _cached(client, seen)
    lines = [
        _line("cached", seen),
        _line("first", _chat(f"{tag}: name a fruit")),
        _line("second", _chat(f"{tag}: name a tree")),
        _line("fails", _chat(f"{tag}: sim-batch-fail please")),
        _line("no-batch-api", {**_chat(f"{tag}: name a river"), "model": "sim/gpt-4o-mini"}),
        _line("invalid", {"model": MODEL, "messages": "not a list"}),
    ]
    upload = client.files.with_raw_response.create(file=("input.jsonl", _jsonl(lines)), purpose="batch")
    assert upload.headers["x-tollgate-request-id"]
    file = upload.parse()
    assert (file.object, file.purpose, file.bytes, file.status) == (
        "file",
        "batch",
        len(_jsonl(lines)),
        "processed",
    )
    assert client.files.retrieve(file.id).filename == "input.jsonl"
    assert client.files.content(file.id).content == _jsonl(lines)

    created = client.batches.create(
        input_file_id=file.id, endpoint=CHAT, completion_window="24h", metadata={"run": tag}
    )
    assert created.status in ("validating", "in_progress") and created.metadata == {"run": tag}
    assert (
        created.endpoint == CHAT and created.input_file_id == file.id and created.completion_window == "24h"
    )
    batch = _wait(client, created.id, ("completed",))
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        6,
        4,
        2,
    )
    assert (
        batch.completed_at is not None and batch.in_progress_at is not None and batch.metadata == {"run": tag}
    )
    assert batch.output_file_id and batch.error_file_id
    assert client.batches.retrieve(batch.id).output_file_id == batch.output_file_id  # written once

    job_ids = {line["custom_id"]: f"{batch.id}_{i}" for i, line in enumerate(lines)}
    output = _file_lines(client, batch.output_file_id)
    assert set(output) == {"cached", "first", "second", "no-batch-api"}
    for custom_id, line in output.items():
        assert line["id"].startswith("batch_req_") and line["error"] is None
        response = line["response"]
        assert response["status_code"] == 200 and response["request_id"] == job_ids[custom_id]
        body = response["body"]
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
        assert body["usage"]["prompt_tokens"] > 0
    errors = _file_lines(client, batch.error_file_id)
    assert set(errors) == {"fails", "invalid"}
    assert errors["fails"]["response"]["status_code"] == 500
    assert errors["invalid"]["response"]["status_code"] == 400
    assert errors["invalid"]["response"]["body"]["error"]["param"] == "messages"

    # Only what no cache could answer went upstream, each once, under its job id.
    sent = submissions(batch_sim)
    assert job_ids["cached"] not in sent and job_ids["no-batch-api"] not in sent
    assert [sent.get(job_ids[name]) for name in ("first", "second", "fails")] == [1, 1, 1]

    rows = ledger_with(gw, list(job_ids.values()))
    assert rows[job_ids["cached"]]["cache"] == "hit"
    assert Decimal(rows[job_ids["cached"]]["cost_usd"]) == 0
    assert rows[job_ids["invalid"]]["status"] == 400
    import litellm

    price = litellm.model_cost[MODEL]
    for name in ("first", "second"):
        row = rows[job_ids[name]]
        usage = output[name]["response"]["body"]["usage"]
        assert (row["prompt_tokens"], row["completion_tokens"]) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
        batch_cost = (
            Decimal(str(price["input_cost_per_token_batches"])) * usage["prompt_tokens"]
            + Decimal(str(price["output_cost_per_token_batches"])) * usage["completion_tokens"]
        )
        online_cost = (
            Decimal(str(price["input_cost_per_token"])) * usage["prompt_tokens"]
            + Decimal(str(price["output_cost_per_token"])) * usage["completion_tokens"]
        )
        assert abs(Decimal(row["cost_usd"]) - batch_cost) < Decimal("1e-9"), (row, batch_cost)
        assert abs(batch_cost * 2 - online_cost) < Decimal("1e-9")
        assert abs(Decimal(row["saved_usd"]) - (online_cost - batch_cost)) < Decimal("1e-9")

    listed = client.batches.list(limit=5)
    assert listed.data[0].id == batch.id
    client.files.delete(file.id)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file.id)


def test_embeddings_batch(gw: Proc) -> None:
    client = sdk_client(gw)
    lines = [
        _line(f"e{i}", {"model": "text-embedding-3-small", "input": f"text {i}"}, url="/v1/embeddings")
        for i in range(3)
    ]
    batch = client.batches.create(input_file_id=_upload(client, lines), endpoint="/v1/embeddings",
                                  completion_window="24h")  # fmt: skip
    batch = _wait(client, batch.id, ("completed",))
    output = _file_lines(client, batch.output_file_id)
    assert sorted(output) == ["e0", "e1", "e2"]
    assert all(line["response"]["body"]["object"] == "list" for line in output.values())
    assert batch.error_file_id is None


def test_bad_uploads_and_batches_are_refused_as_openai_refuses_them(gw: Proc) -> None:
    client = sdk_client(gw)
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("input.jsonl", _jsonl([_line("a", _chat("x"))])), purpose="fine-tune")
    assert refused.value.body["param"] == "purpose"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("notes.txt", b"just words\n"), purpose="batch")
    assert refused.value.body["param"] == "file"  # type: ignore[index]
    good = _upload(client, [_line("a", _chat("x"))])
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(input_file_id=good, endpoint="/v1/moderations", completion_window="24h")  # type: ignore[arg-type]
    assert refused.value.body["param"] == "endpoint"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(input_file_id=good, endpoint=CHAT, completion_window="1h")  # type: ignore[arg-type]
    assert refused.value.body["param"] == "completion_window"  # type: ignore[index]

    unknown = client.batches.create(input_file_id="file-nope", endpoint=CHAT, completion_window="24h")
    assert unknown.status == "failed" and unknown.failed_at is not None
    assert unknown.errors is not None and unknown.errors.data is not None
    assert "file-nope" in (unknown.errors.data[0].message or "")

    bad = _upload(
        client,
        _jsonl([_line("a", _chat("x"))]) + b"{not json\n"
        + _jsonl([_line("a", _chat("y")), _line("b", _chat("z"), url="/v1/embeddings"),
                  {"custom_id": "c", "method": "GET", "url": CHAT, "body": _chat("w")}]),
    )  # fmt: skip
    failed = client.batches.create(input_file_id=bad, endpoint=CHAT, completion_window="24h")
    assert failed.status == "failed"
    assert failed.errors is not None and failed.errors.data is not None
    found = {(error.line, error.code) for error in failed.errors.data}
    assert found == {
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
        (4, "invalid_url"),
        (5, "invalid_method"),
    }
    assert client.batches.retrieve(failed.id).status == "failed"

    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_unknown")
    status, headers, body = http("GET", f"{gw.url}/v1/batches")
    assert status == 401 and body["error"]["code"] == "missing_api_key"
    assert headers["x-tollgate-request-id"]


def test_another_team_sees_neither_the_files_nor_the_batches(gw: Proc) -> None:
    owner, stranger = sdk_client(gw), sdk_client(gw)
    file_id = _upload(owner, [_line("a", _chat("x"))])
    batch = owner.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    for call in (
        lambda: stranger.files.retrieve(file_id),
        lambda: stranger.files.content(file_id),
        lambda: stranger.files.delete(file_id),
        lambda: stranger.batches.retrieve(batch.id),
        lambda: stranger.batches.cancel(batch.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert batch.id not in {b.id for b in stranger.batches.list()}
    # Someone else's file cannot be a batch's input either.
    stolen = stranger.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    assert stolen.status == "failed"
    _wait(owner, batch.id, ("completed",))


def test_batches_are_listed_newest_first_in_pages(gw: Proc) -> None:
    client = sdk_client(gw)
    file_id = _upload(client, [_line("a", _chat("x"))])
    made = [client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h").id
            for _ in range(3)]  # fmt: skip
    assert [f.id for f in client.files.list(purpose="batch")] == [file_id]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == made[::-1][:2] and first.has_more
    rest = client.batches.list(limit=2, after=first.data[-1].id)
    assert [b.id for b in rest.data] == [made[0]] and not rest.has_more
    assert [b.id for b in client.batches.list(limit=2)] == made[::-1]


def test_a_cancelled_batch_sends_nothing_and_reports_every_line_cancelled(
    slow_gw: Proc, batch_sim: Proc
) -> None:
    client = sdk_client(slow_gw)
    lines = [_line(f"c{i}", _chat(f"{uuid.uuid4().hex}: cancel me")) for i in range(4)]
    batch = client.batches.create(
        input_file_id=_upload(client, lines), endpoint=CHAT, completion_window="24h"
    )
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at is not None
    done = _wait(client, batch.id, ("cancelled",))
    assert done.cancelled_at is not None and done.output_file_id is None
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (4, 0, 4)
    errors = _file_lines(client, done.error_file_id)
    assert sorted(errors) == [f"c{i}" for i in range(4)]
    for line in errors.values():
        assert line["response"] is None and line["error"]["code"] == "batch_cancelled"
    sent = submissions(batch_sim)
    assert not any(f"{batch.id}_{i}" in sent for i in range(4))


def test_an_ended_batch_cannot_be_cancelled(gw: Proc) -> None:
    client = sdk_client(gw)
    file_id = _upload(client, [_line("a", _chat("x"))])
    batch = client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    _wait(client, batch.id, ("completed",))
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.cancel(batch.id)
    assert "completed" in refused.value.message


def test_a_gateway_killed_while_sending_lines_resumes_without_losing_or_repeating_one(
    batch_sim: Proc, tmp_path: Path
) -> None:
    config = _config(tmp_path, batch_sim, lease_ttl_s=1)
    port = free_port()
    lines = [_line(f"r{i}", _chat(f"{uuid.uuid4().hex}: resume {i}")) for i in range(600)]
    with run_gateway(tmp_path, config, port=port) as first:
        client = sdk_client(first)
        key = client.api_key
        auth = {"authorization": f"Bearer {key}"}
        batch = client.batches.create(
            input_file_id=_upload(client, lines), endpoint=CHAT, completion_window="24h"
        )
        # Killed once its first lines have been kept as jobs, long before the last one.
        deadline = time.monotonic() + 20
        while http("GET", f"{first.url}/v1/deferred/{batch.id}_0", headers=auth)[0] == 404:
            assert time.monotonic() < deadline, "the batch's first line never became a job"
            time.sleep(0.005)
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait()
    with run_gateway(tmp_path, config, port=port) as second:
        client = openai.OpenAI(base_url=second.v1, api_key=key, max_retries=0, timeout=30)
        done = _wait(client, batch.id, ("completed",), timeout_s=90)
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed) == (600, 600)
        output = _file_lines(client, done.output_file_id)
        assert sorted(output) == sorted(line["custom_id"] for line in lines)
        sent = submissions(batch_sim)
        assert [sent.get(f"{batch.id}_{i}") for i in range(600)] == [1] * 600
        # The second gateway sent only the lines the first had not (its log says how many).
        resumed = [
            orjson.loads(line) for line in second.logs().splitlines() if "client batch lines sent" in line
        ]
        assert resumed and 0 < resumed[0]["lines"] < 600, resumed
        rows = ledger_with(second, [f"{batch.id}_{i}" for i in range(600)])
        assert all(rows[f"{batch.id}_{i}"]["status"] == 200 for i in range(600))
