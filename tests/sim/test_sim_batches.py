"""The simulator's batch APIs through the official SDKs: OpenAI Files + Batch, Anthropic Message Batches."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx
import openai
import orjson
import pytest
from openai.types import Batch, Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from gateway.cli import build_parser
from gateway.config import SimConfig
from tests.sim.conftest import StartSim

GPT = "sim/gpt-4o-mini"
CLAUDE = "sim/claude-3-5-haiku-latest"
ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
T = TypeVar("T")


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 10.0) -> T:
    """Poll `read` until `done`; a deadline, never a fixed sleep."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"still not done: {value!r}"
        time.sleep(0.05)


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def chat_line(custom_id: str, text: str, **extra: Any) -> dict[str, Any]:
    body = {"model": GPT, "messages": [{"role": "user", "content": text}], **extra}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def read_jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [orjson.loads(line) for line in client.files.content(file_id).content.splitlines()]


def submit(
    client: openai.OpenAI, lines: list[dict[str, Any]], endpoint: str = "/v1/chat/completions"
) -> Batch:
    upload = client.files.create(file=("requests.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(input_file_id=upload.id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]


def finished(client: openai.OpenAI, batch_id: str) -> Batch:
    ends = ("completed", "failed", "expired", "cancelled")
    return wait_for(lambda: client.batches.retrieve(batch_id), lambda b: b.status in ends)


def submissions(url: str) -> dict[str, dict[str, int]]:
    answer: dict[str, dict[str, int]] = httpx.get(f"{url}/sim/batches/requests").json()
    return answer


@pytest.fixture
def sim(start_sim: StartSim) -> Iterator[str]:
    with start_sim(SimConfig(batch_delay_s=0.2)) as url:
        yield url


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0, timeout=10)


def claude_sdk(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0, timeout=10)


# -- OpenAI: files ----------------------------------------------------------------------------
def test_upload_from_an_open_file_then_read_and_delete(sim: str, tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(jsonl([chat_line("a", "Hello"), chat_line("b", "Bye")]))
    client = sdk(sim)
    with path.open("rb") as handle:
        upload = client.files.create(file=handle, purpose="batch")
    assert upload.id.startswith("file-") and upload.object == "file"
    assert (upload.filename, upload.purpose, upload.status) == ("requests.jsonl", "batch", "processed")
    assert upload.bytes == path.stat().st_size
    assert client.files.retrieve(upload.id) == upload
    assert client.files.content(upload.id).content == path.read_bytes()
    deleted = client.files.delete(upload.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (upload.id, "file", True)
    with pytest.raises(openai.NotFoundError) as gone:
        client.files.retrieve(upload.id)
    assert gone.value.body == {
        "message": f"No such File object: {upload.id}", "type": "invalid_request_error", "param": "id", "code": None,
    }  # fmt: skip


def test_upload_refuses_other_purposes_and_a_file_that_is_not_jsonl(sim: str) -> None:
    client = sdk(sim)
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=("a.jsonl", jsonl([chat_line("a", "Hi")])), purpose="fine-tune")
    assert purpose.value.status_code == 400
    assert isinstance(purpose.value.body, dict)
    assert purpose.value.body["param"] == "purpose" and purpose.value.body["code"] == "invalid_value"
    assert "'fine-tune'" in purpose.value.body["message"]
    with pytest.raises(openai.BadRequestError) as not_jsonl:
        client.files.create(file=("a.csv", b"custom_id,prompt\nx,hello\n"), purpose="batch")
    assert "Invalid file format for Batch API. Must be .jsonl" in str(not_jsonl.value)


def test_files_and_batches_need_an_api_key(sim: str) -> None:
    for path in ("/v1/files", "/v1/batches"):
        answer = httpx.get(f"{sim}{path}")
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == 'Bearer realm="OpenAI API"'
        assert "You didn't provide an API key" in answer.json()["error"]["message"]


# -- OpenAI: batches --------------------------------------------------------------------------
def test_chat_batch_completes_with_the_online_answers(sim: str) -> None:
    client = sdk(sim)
    lines = [chat_line("owls", "Tell me about owls."), chat_line("rain", "Why does it rain?", max_tokens=5)]
    upload = client.files.create(file=("requests.jsonl", jsonl(lines)), purpose="batch")
    created = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
        metadata={"job": "nightly"},
    )  # fmt: skip
    assert created.id.startswith("batch_") and created.object == "batch"
    assert created.status == "validating" and created.metadata == {"job": "nightly"}
    assert (created.endpoint, created.input_file_id, created.completion_window) == (
        "/v1/chat/completions", upload.id, "24h",
    )  # fmt: skip
    assert created.expires_at == created.created_at + 24 * 3600

    done = finished(client, created.id)
    assert done.status == "completed" and done.errors is None
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (2, 2, 0)
    assert (
        done.in_progress_at is not None and done.completed_at is not None and done.finalizing_at is not None
    )
    assert done.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at
    assert done.failed_at is None and done.expired_at is None and done.cancelled_at is None
    assert done.error_file_id is None  # nothing failed, so no error file
    output_file = client.files.retrieve(done.output_file_id or "")
    assert (output_file.purpose, output_file.filename) == ("batch_output", f"{done.id}_output.jsonl")

    output = read_jsonl(client, done.output_file_id)
    assert [line["custom_id"] for line in output] == ["owls", "rain"]
    for line, request in zip(output, lines, strict=True):
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"].startswith("req_")
        body = ChatCompletion.model_validate(line["response"]["body"])
        online = client.chat.completions.create(**request["body"])
        assert body.object == "chat.completion" and body.model == GPT
        assert body.choices[0].message.content == online.choices[0].message.content
        assert body.choices[0].finish_reason == online.choices[0].finish_reason
        assert body.usage == online.usage and body.usage is not None and body.usage.completion_tokens > 0
    assert output[1]["response"]["body"]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("endpoint", "body", "shape"),
    [
        (
            "/v1/completions",
            {"model": "sim/gpt-3.5-turbo-instruct", "prompt": "Once upon a time"},
            Completion,
        ),
        (
            "/v1/embeddings",
            {"model": "sim/text-embedding-3-small", "input": "a red fox"},
            CreateEmbeddingResponse,
        ),
    ],
)
def test_completions_and_embeddings_batches_answer_as_online(
    sim: str, endpoint: str, body: dict[str, Any], shape: type[Completion | CreateEmbeddingResponse]
) -> None:
    client = sdk(sim)
    done = finished(client, submit(client, [{"custom_id": "one", "method": "POST", "url": endpoint, "body": body}],
                                   endpoint).id)  # fmt: skip
    assert done.status == "completed" and done.endpoint == endpoint
    (line,) = read_jsonl(client, done.output_file_id)
    online = httpx.post(f"{sim}{endpoint}", json=body, headers={"authorization": "Bearer sk-test"}).json()
    answer = shape.model_validate(line["response"]["body"])
    assert answer.usage == shape.model_validate(online).usage
    without_ids = {k: v for k, v in line["response"]["body"].items() if k not in ("id", "created")}
    assert without_ids == {k: v for k, v in online.items() if k not in ("id", "created")}


def test_failed_requests_land_in_the_error_file_with_the_online_error(sim: str) -> None:
    client = sdk(sim)
    lines = [
        chat_line("fine", "Hello there."),
        chat_line("marked", "Please fail: sim-batch-fail"),
        chat_line("too-hot", "Hello there.", temperature=5),
    ]
    done = finished(client, submit(client, lines).id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 1, 2)
    assert [line["custom_id"] for line in read_jsonl(client, done.output_file_id)] == ["fine"]
    errors = {line["custom_id"]: line for line in read_jsonl(client, done.error_file_id)}
    assert set(errors) == {"marked", "too-hot"}
    marked = errors["marked"]["response"]
    assert errors["marked"]["error"] is None and marked["status_code"] == 500
    assert marked["body"]["error"]["type"] == "server_error"
    online = httpx.post(
        f"{sim}/v1/chat/completions", json=lines[2]["body"], headers={"authorization": "Bearer k"}
    )
    assert online.status_code == 400
    assert errors["too-hot"]["response"]["status_code"] == 400
    assert errors["too-hot"]["response"]["body"] == online.json()


def test_failure_rate_fails_the_same_custom_ids_every_time(start_sim: StartSim) -> None:
    with start_sim(SimConfig(batch_delay_s=0.1, batch_failure_rate=0.5)) as url:
        client = sdk(url)
        lines = [chat_line(f"request-{i}", f"Question number {i}") for i in range(20)]
        failed_sets = []
        for _ in range(2):
            done = finished(client, submit(client, lines).id)
            assert done.request_counts is not None and done.request_counts.total == 20
            failed = {line["custom_id"] for line in read_jsonl(client, done.error_file_id)}
            assert all(
                line["response"]["status_code"] == 500 for line in read_jsonl(client, done.error_file_id)
            )
            assert done.request_counts.failed == len(failed) and done.request_counts.completed == 20 - len(
                failed
            )
            failed_sets.append(failed)
        assert failed_sets[0] == failed_sets[1] and 0 < len(failed_sets[0]) < 20


def test_a_batch_that_outlives_its_window_expires(start_sim: StartSim) -> None:
    with start_sim(SimConfig(batch_delay_s=60, batch_expire_s=0.2)) as url:
        client = sdk(url)
        created = submit(client, [chat_line("a", "Hi"), chat_line("b", "Hello")])
        assert created.expires_at is not None and created.expires_at - created.created_at in (0, 1)
        done = finished(client, created.id)
        assert done.status == "expired" and done.expired_at is not None and done.completed_at is None
        assert done.output_file_id is None
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (
            2,
            0,
            2,
        )
        errors = read_jsonl(client, done.error_file_id)
        assert [(e["custom_id"], e["response"]) for e in errors] == [("a", None), ("b", None)]
        assert all(e["id"].startswith("batch_req_") for e in errors)
        assert {orjson.dumps(e["error"]) for e in errors} == {orjson.dumps({
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        })}  # fmt: skip


def test_cancel_goes_through_cancelling_to_cancelled(start_sim: StartSim) -> None:
    with start_sim(SimConfig(batch_delay_s=60)) as url:
        client = sdk(url)
        batch = submit(client, [chat_line("a", "Hi"), chat_line("b", "Hello")])
        assert client.batches.retrieve(batch.id).status == "in_progress"
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
        assert cancelling.cancelled_at is None and cancelling.error_file_id is None
        cancelled = client.batches.retrieve(batch.id)
        assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
        assert cancelled.output_file_id is None
        errors = read_jsonl(client, cancelled.error_file_id)
        assert [(e["custom_id"], e["response"], e["error"]["code"]) for e in errors] == [
            ("a", None, "batch_cancelled"), ("b", None, "batch_cancelled"),
        ]  # fmt: skip
        assert client.batches.cancel(batch.id).status == "cancelled"  # asking again changes nothing


def test_a_completed_batch_cannot_be_cancelled(sim: str) -> None:
    client = sdk(sim)
    done = finished(client, submit(client, [chat_line("a", "Hi")]).id)
    with pytest.raises(openai.ConflictError) as refused:
        client.batches.cancel(done.id)
    assert refused.value.body == {
        "message": "Cannot cancel a batch with status 'completed'.", "type": "invalid_request_error",
        "param": None, "code": None,
    }  # fmt: skip


def test_list_is_newest_first_with_cursor_pages(start_sim: StartSim) -> None:
    with start_sim(SimConfig(batch_delay_s=60)) as url:
        client = sdk(url)
        ids = [submit(client, [chat_line("a", f"Hi {i}")]).id for i in range(3)]
        first = client.batches.list(limit=2)
        assert [b.id for b in first.data] == [ids[2], ids[1]] and first.has_more is True
        assert [b.status for b in first.data] == ["in_progress", "in_progress"]
        assert [b.id for b in client.batches.list(limit=2, after=ids[1]).data] == [ids[0]]
        assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # the SDK follows the pages
        raw = httpx.get(f"{url}/v1/batches?limit=2", headers={"authorization": "Bearer k"}).json()
        assert (raw["object"], raw["first_id"], raw["last_id"], raw["has_more"]) == (
            "list",
            ids[2],
            ids[1],
            True,
        )
        with pytest.raises(openai.NotFoundError) as missing:
            client.batches.retrieve("batch_nope")
        assert "No batch found with id 'batch_nope'." in str(missing.value)


def test_an_invalid_file_fails_the_batch_line_by_line(sim: str) -> None:
    client = sdk(sim)
    content = b"\n".join([
        orjson.dumps(chat_line("ok", "Hi")),
        b"{not json",
        orjson.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {"model": GPT}}),
        orjson.dumps({**chat_line("wrong-url", "Hi"), "url": "/v1/embeddings"}),
        orjson.dumps(chat_line("ok", "Hi again")),
        orjson.dumps(chat_line("streamed", "Hi", stream=True)),
    ])  # fmt: skip
    upload = client.files.create(file=("requests.jsonl", content), purpose="batch")
    created = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = finished(client, created.id)
    assert failed.status == "failed" and failed.failed_at is not None and failed.in_progress_at is None
    assert failed.output_file_id is None and failed.error_file_id is None
    assert failed.request_counts is not None and failed.request_counts.total == 0
    assert failed.errors is not None and failed.errors.object == "list"
    assert [(e.code, e.line, e.param) for e in failed.errors.data or []] == [
        ("invalid_json_line", 2, None),
        ("missing_required_parameter", 3, "custom_id"),
        ("invalid_url", 4, "url"),
        ("duplicate_custom_id", 5, "custom_id"),
        ("streaming_unsupported", 6, "body.stream"),
    ]
    assert (failed.errors.data or [])[0].message == "This line is not parseable as valid JSON."
    assert submissions(sim)["openai"] == {}  # a batch that failed validation ran nothing


def test_create_checks_its_parameters(sim: str) -> None:
    client = sdk(sim)
    upload = client.files.create(file=("requests.jsonl", jsonl([chat_line("a", "Hi")])), purpose="batch")
    with pytest.raises(openai.BadRequestError) as endpoint:
        client.batches.create(input_file_id=upload.id, endpoint="/v1/moderations", completion_window="24h")  # type: ignore[arg-type]
    assert endpoint.value.body == {
        "message": "Invalid value: '/v1/moderations'. Supported values are: '/v1/chat/completions', "
        "'/v1/completions', and '/v1/embeddings'.",
        "type": "invalid_request_error", "param": "endpoint", "code": "invalid_value",
    }  # fmt: skip
    with pytest.raises(openai.BadRequestError) as window:
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="1h"
        )  # type: ignore[arg-type]
    assert isinstance(window.value.body, dict) and window.value.body["param"] == "completion_window"
    with pytest.raises(openai.BadRequestError) as metadata:
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
            metadata={"tags": ["x"]},  # type: ignore[dict-item]
        )  # fmt: skip
    assert "Invalid type for 'metadata.tags': expected a string, but got an array instead." in str(
        metadata.value
    )
    missing = client.batches.create(
        input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = finished(client, missing.id)
    assert failed.status == "failed" and failed.errors is not None
    assert [(e.code, e.param) for e in failed.errors.data or []] == [("invalid_request", "file_id")]


# -- Anthropic --------------------------------------------------------------------------------
def message_request(custom_id: str, text: str, **extra: Any) -> dict[str, Any]:
    params = {"model": CLAUDE, "max_tokens": 256, "messages": [{"role": "user", "content": text}], **extra}
    return {"custom_id": custom_id, "params": params}


def ended(claude: anthropic.Anthropic, batch_id: str) -> Any:
    return wait_for(
        lambda: claude.messages.batches.retrieve(batch_id), lambda b: b.processing_status == "ended"
    )


def test_message_batch_results_match_the_messages_api(sim: str) -> None:
    claude = claude_sdk(sim)
    good = message_request("good", "Tell me about owls.")
    invalid = {
        "custom_id": "no-max-tokens",
        "params": {"model": CLAUDE, "messages": [{"role": "user", "content": "Hi"}]},
    }
    marked = message_request("marked", "Fail this one: sim-batch-fail")
    created = claude.messages.batches.create(requests=[good, invalid, marked])  # type: ignore[list-item]
    assert created.id.startswith("msgbatch_") and created.type == "message_batch"
    assert created.processing_status == "in_progress" and created.results_url is None
    assert created.request_counts.processing == 3 and created.ended_at is None and created.archived_at is None
    assert (created.expires_at - created.created_at).total_seconds() == pytest.approx(24 * 3600)

    done = ended(claude, created.id)
    counts = done.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired) == (
        0,
        1,
        2,
        0,
        0,
    )
    assert done.ended_at is not None and done.ended_at >= done.created_at
    assert done.results_url == f"{sim}/v1/messages/batches/{done.id}/results"

    results = {r.custom_id: r.result for r in claude.messages.batches.results(done.id)}
    online = claude.messages.create(**good["params"])
    succeeded = results["good"]
    assert succeeded.type == "succeeded"
    assert succeeded.message.content == online.content and succeeded.message.usage == online.usage
    assert succeeded.message.id.startswith("msg_") and succeeded.message.stop_reason == "end_turn"
    refused = results["no-max-tokens"]
    assert refused.type == "errored" and refused.error.error.type == "invalid_request_error"
    online_refusal = httpx.post(f"{sim}/v1/messages", json=invalid["params"], headers=ANTHROPIC_HEADERS)
    assert online_refusal.status_code == 400
    assert (
        refused.error.error.message
        == online_refusal.json()["error"]["message"]
        == "max_tokens: Field required"
    )
    failed = results["marked"]
    assert failed.type == "errored" and failed.error.error.type == "api_error"


def test_message_batch_envelope_errors_refuse_the_whole_batch(sim: str) -> None:
    claude = claude_sdk(sim)
    with pytest.raises(anthropic.BadRequestError) as duplicate:
        claude.messages.batches.create(requests=[message_request("same", "a"), message_request("same", "b")])  # type: ignore[list-item]
    assert "Duplicate custom_id 'same'" in duplicate.value.message
    with pytest.raises(anthropic.BadRequestError) as pattern:
        claude.messages.batches.create(requests=[message_request("has space", "a")])  # type: ignore[list-item]
    assert (
        "requests.0.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'" in pattern.value.message
    )
    with pytest.raises(anthropic.BadRequestError) as empty:
        claude.messages.batches.create(requests=[])
    assert "requests: List should have at least 1 item" in empty.value.message
    assert submissions(sim)["anthropic"] == {}


def test_message_batch_cancel_ends_with_canceled_results(start_sim: StartSim) -> None:
    with start_sim(SimConfig(batch_delay_s=60)) as url:
        claude = claude_sdk(url)
        batch = claude.messages.batches.create(
            requests=[message_request("a", "Hi"), message_request("b", "Yo")]
        )  # type: ignore[list-item]
        with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
            claude.messages.batches.results(batch.id)
        canceling = claude.messages.batches.cancel(batch.id)
        assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
        assert canceling.request_counts.processing == 2
        done = claude.messages.batches.retrieve(batch.id)
        assert done.processing_status == "ended" and done.request_counts.canceled == 2
        assert [(r.custom_id, r.result.type) for r in claude.messages.batches.results(batch.id)] == [
            ("a", "canceled"), ("b", "canceled"),
        ]  # fmt: skip
        with pytest.raises(anthropic.BadRequestError, match="has already ended"):
            claude.messages.batches.cancel(batch.id)
        assert claude.messages.batches.delete(batch.id).type == "message_batch_deleted"
        with pytest.raises(anthropic.NotFoundError):
            claude.messages.batches.retrieve(batch.id)


def test_message_batch_expires(start_sim: StartSim) -> None:
    with start_sim(SimConfig(batch_delay_s=60, batch_expire_s=0.2)) as url:
        claude = claude_sdk(url)
        batch = claude.messages.batches.create(
            requests=[message_request("a", "Hi"), message_request("b", "Yo")]
        )  # type: ignore[list-item]
        assert (batch.expires_at - batch.created_at).total_seconds() == pytest.approx(0.2, abs=1e-5)
        done = ended(claude, batch.id)
        assert done.request_counts.expired == 2 and done.ended_at == done.expires_at
        assert {r.result.type for r in claude.messages.batches.results(batch.id)} == {"expired"}


def test_message_batch_results_are_refused_before_the_end(start_sim: StartSim) -> None:
    with start_sim(SimConfig(batch_delay_s=60)) as url:
        batch = claude_sdk(url).messages.batches.create(requests=[message_request("a", "Hi")])  # type: ignore[list-item]
        answer = httpx.get(f"{url}/v1/messages/batches/{batch.id}/results", headers=ANTHROPIC_HEADERS)
        assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
        assert "has not ended yet" in answer.json()["error"]["message"]
        assert httpx.get(f"{url}/v1/messages/batches/{batch.id}").status_code == 401


def test_message_batch_list_pages_newest_first(start_sim: StartSim) -> None:
    with start_sim(SimConfig(batch_delay_s=60)) as url:
        claude = claude_sdk(url)
        ids = [claude.messages.batches.create(requests=[message_request("a", "Hi")]).id for _ in range(3)]  # type: ignore[list-item]
        page = claude.messages.batches.list(limit=2)
        assert [b.id for b in page.data] == [ids[2], ids[1]] and page.has_more is True
        assert (page.first_id, page.last_id) == (ids[2], ids[1])
        assert [b.id for b in claude.messages.batches.list(limit=2)] == ids[::-1]
        assert [b.id for b in claude.messages.batches.list(before_id=ids[0], limit=1).data] == [ids[1]]


# -- both -------------------------------------------------------------------------------------
def test_every_submitted_custom_id_is_counted_once_per_submission(sim: str) -> None:
    client, claude = sdk(sim), claude_sdk(sim)
    lines = [chat_line("o-1", "Hi"), chat_line("o-2", "Yo")]
    finished(client, submit(client, lines).id)
    finished(client, submit(client, lines[:1]).id)
    claude.messages.batches.create(requests=[message_request("a-1", "Hi")])  # type: ignore[list-item]
    assert submissions(sim) == {"openai": {"o-1": 2, "o-2": 1}, "anthropic": {"a-1": 1}}


def test_cli_sim_takes_the_batch_knobs() -> None:
    args = build_parser().parse_args(
        ["sim", "--batch-delay-s", "0.5", "--batch-expire-s", "30", "--batch-failure-rate", "0.25"]
    )
    assert (args.batch_delay_s, args.batch_expire_s, args.batch_failure_rate) == (0.5, 30.0, 0.25)
    defaults = build_parser().parse_args(["sim"])
    settings = SimConfig(batch_delay_s=defaults.batch_delay_s, batch_expire_s=defaults.batch_expire_s,
                         batch_failure_rate=defaults.batch_failure_rate)  # fmt: skip
    assert settings == SimConfig()
