"""`tollgate-engine serve` as a real process, driven by the official openai SDK."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.demo.processes import free_port

MODEL = "tiny-llama"
LONG = "Please summarise this function for me:\n" + "def f(x):\n    return x * 2 + 1\n" * 6



@pytest.fixture(scope="module")
def server(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("engine") / "server.log"
    command = [
        sys.executable, "-m", "local_engine.cli", "serve", "--model", str(model_dirs["llama"]),
        "--port", str(port), "--served-model-name", MODEL, "--threads", "1", "--num-kv-blocks", "512",
        "--max-model-len", "2048", "--log-level", "warning",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"engine did not start:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def client(server: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def test_models_and_health(client: openai.OpenAI, server: str) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}


def test_chat_stream_matches_the_non_streamed_answer(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hello there"}]
    settings = {"model": MODEL, "messages": messages, "max_tokens": 16, "temperature": 0, "extra_body": {"ignore_eos": True}}
    whole = client.chat.completions.create(**settings)  # type: ignore[call-overload]
    stream = client.chat.completions.create(**settings, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens  # type: ignore[union-attr]


def test_completions_stream_and_n(client: openai.OpenAI) -> None:
    stream = client.completions.create(model=MODEL, prompt="import sys\n", max_tokens=8, temperature=0, stream=True)
    pieces = [c.choices[0].text for c in stream]
    whole = client.completions.create(model=MODEL, prompt="import sys\n", max_tokens=8, temperature=0)
    assert "".join(pieces) == whole.choices[0].text
    many = client.completions.create(model=MODEL, prompt="x = ", max_tokens=5, n=3, temperature=1.0, seed=3)
    assert sorted(c.index for c in many.choices) == [0, 1, 2]
    assert many.usage is not None and many.usage.completion_tokens <= 15


def test_usage_reports_cached_prompt_tokens_per_tenant(client: openai.OpenAI) -> None:
    def cached(tenant_header: str | None, tenant_body: str | None) -> int:
        headers = {"x-tollgate-tenant": tenant_header} if tenant_header is not None else {}
        body = {"tenant": tenant_body} if tenant_body is not None else {}
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": LONG}], max_tokens=2, temperature=0,
            extra_headers=headers, extra_body=body,
        )
        assert r.usage is not None and r.usage.prompt_tokens_details is not None
        return r.usage.prompt_tokens_details.cached_tokens or 0

    assert cached("team-a", None) == 0
    warm = cached("team-a", None)
    assert warm >= 32
    assert cached("team-b", None) == 0  # another tenant never sees team-a's KV
    assert cached(None, "team-a") == warm  # the body field works too...
    assert cached("team-c", "team-a") == 0  # ...but the header wins


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400, "messages"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400, "temperature"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"content": "hi"}]}, 400, "messages[0].role"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, 400, "tools"),
        ("/v1/completions", {"model": MODEL, "prompt": ""}, 400, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": "hi", "top_p": 7}, 400, "top_p"),
        ("/v1/completions", {"model": MODEL, "prompt": "x" * 20000}, 400, "prompt"),
        ("/v1/completions", {"model": "gpt-4o", "prompt": "hi"}, 404, "model"),
    ],
)
def test_bad_input_gets_an_openai_error_naming_the_field(
    server: str, path: str, body: dict[str, object], status: int, param: str
) -> None:
    response = httpx.post(server + path, json=body, timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param
    assert error["message"] and "Traceback" not in response.text


def test_invalid_json_is_a_400(server: str) -> None:
    response = httpx.post(f"{server}/v1/chat/completions", content=b"{nope", timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_client_that_disconnects_frees_its_sequence(client: openai.OpenAI, server: str) -> None:
    stream = client.completions.create(
        model=MODEL, prompt="while True:", max_tokens=1500, temperature=0, stream=True, extra_body={"ignore_eos": True}
    )
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 20
    while "tollgate_engine_requests_running 0" not in httpx.get(f"{server}/metrics").text:
        assert time.monotonic() < deadline, "the abandoned sequence kept running"
        time.sleep(0.1)
    metrics = httpx.get(f"{server}/metrics").text
    for name in ("kv_blocks_free", "prefix_cache_hits_total", "generation_tokens_total", "preemptions_total"):
        assert f"tollgate_engine_{name}" in metrics
