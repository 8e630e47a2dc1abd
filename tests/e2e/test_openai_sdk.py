"""The official `openai` SDKs (Python sync + async, and the npm package) against a real gateway.

The client code is what an application already runs against OpenAI; only `base_url` points
at the gateway. The simulated provider is deterministic, so a streamed answer must spell
the same text as the non-streamed answer to the same prompt.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from openai import AsyncOpenAI, OpenAI

from tests.support.procs import Proc

pytestmark = pytest.mark.e2e

# The three kinds of upstream of the e2e config: the OpenAI wire over HTTP, the Anthropic
# wire through the litellm adapter, and the in-process simulator.
CHAT_MODELS = ["gpt-4o", "claude-3-5-haiku", "sim/gpt-4o-mini"]
PROMPT = [{"role": "user", "content": "Explain how a prompt cache saves money."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def client(gateway: Proc, api_key: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=gateway.v1, api_key=api_key, max_retries=0, timeout=TIMEOUT_S) as sdk:
        yield sdk


def _async_client(gateway: Proc, api_key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gateway.v1, api_key=api_key, max_retries=0, timeout=TIMEOUT_S)


# -- chat, not streamed -----------------------------------------------------------------------


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_chat_answers_with_content_and_usage(client: OpenAI, model: str) -> None:
    completion = client.chat.completions.create(model=model, messages=PROMPT)

    assert completion.object == "chat.completion"
    assert completion.id
    # The served model's name, as OpenAI names the snapshot that answered.
    assert completion.model.removeprefix("sim/").startswith(model.removeprefix("sim/"))
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and len(choice.message.content.split()) > 3
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_raw_response_carries_request_id_and_cost(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=PROMPT)
    completion = raw.parse()

    assert raw.status_code == 200
    assert len(raw.headers["x-request-id"]) >= 16
    assert Decimal(raw.headers["x-tollgate-cost-usd"]) > 0
    assert Decimal(raw.headers["x-tollgate-saved-usd"]) >= 0
    assert completion.choices[0].message.content


def test_each_response_has_its_own_request_id(client: OpenAI) -> None:
    ids = {
        client.chat.completions.with_raw_response.create(model="sim/gpt-4o-mini", messages=PROMPT).headers[
            "x-request-id"
        ]
        for _ in range(3)
    }
    assert len(ids) == 3


# -- chat, streamed ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_stream_spells_the_same_text_and_has_no_usage_unless_asked(client: OpenAI, model: str) -> None:
    whole = client.chat.completions.create(model=model, messages=PROMPT)
    stream = client.chat.completions.create(model=model, messages=PROMPT, stream=True)
    with stream:
        chunks = list(stream)

    assert len(chunks) > 2, "the answer arrived in one piece, not streamed"
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks), "a usage-only chunk the client did not ask for"


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_stream_with_include_usage_ends_in_a_usage_chunk(client: OpenAI, model: str) -> None:
    whole = client.chat.completions.create(model=model, messages=PROMPT)
    stream = client.chat.completions.create(
        model=model,
        messages=PROMPT,
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert whole.usage is not None
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == whole.choices[0].message.content
    )


# -- tools, structured output, sampling parameters -------------------------------------------


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_tool_call_has_json_arguments(client: OpenAI, model: str) -> None:
    messages = [{"role": "user", "content": "Use get_weather for Paris, please."}]
    completion = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str)
    assert arguments["unit"] in ("c", "f")


def test_tool_round_trip_ends_in_an_answer(client: OpenAI) -> None:
    messages: list[dict[str, object]] = [{"role": "user", "content": "Use get_weather for Paris, please."}]
    first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp": 18, "unit": "c"}'})

    second = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])

    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content
    assert not second.choices[0].message.tool_calls


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_streamed_tool_call_deltas_reassemble(client: OpenAI, model: str) -> None:
    messages = [{"role": "user", "content": "Use get_weather for Paris, please."}]
    whole = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    stream = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL], stream=True)
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    finish = []
    with stream:
        for chunk in stream:
            for choice in chunk.choices:
                for delta in choice.delta.tool_calls or []:
                    if delta.function and delta.function.name:
                        names[delta.index] = names.get(delta.index, "") + delta.function.name
                    if delta.function and delta.function.arguments:
                        arguments[delta.index] = arguments.get(delta.index, "") + delta.function.arguments
                if choice.finish_reason:
                    finish.append(choice.finish_reason)

    assert finish == ["tool_calls"]
    assert names == {0: "get_weather"}
    assert json.loads(arguments[0]) == json.loads(whole.choices[0].message.tool_calls[0].function.arguments)


def test_response_format_json_schema(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "year": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["title", "year", "tags"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Describe a film as JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "film", "schema": schema, "strict": True},
        },
    )

    value = json.loads(completion.choices[0].message.content or "")
    assert set(value) == {"title", "year", "tags"}
    assert isinstance(value["title"], str)
    assert isinstance(value["year"], int)
    assert all(isinstance(tag, str) for tag in value["tags"])


def test_n_returns_that_many_choices(client: OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o", messages=PROMPT, n=2)

    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content for c in completion.choices)
    assert completion.choices[0].message.content != completion.choices[1].message.content


def test_stop_sequence_cuts_the_answer(client: OpenAI) -> None:
    full = client.chat.completions.create(model="gpt-4o", messages=PROMPT).choices[0].message.content or ""
    words = full.split()
    stop = words[len(words) // 2]
    cut = client.chat.completions.create(model="gpt-4o", messages=PROMPT, stop=[stop])

    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == full[: full.index(stop)]


def test_seed_makes_answers_repeatable(client: OpenAI) -> None:
    def answer(seed: int) -> str:
        # Past the exact cache, so the upstream itself is shown to repeat its answer.
        completion = client.chat.completions.create(
            model="gpt-4o", messages=PROMPT, seed=seed, extra_headers={"x-tollgate-cache": "bypass"}
        )
        return completion.choices[0].message.content or ""

    assert answer(42) == answer(42)
    assert answer(42) != answer(43)


def test_logprobs(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o", messages=PROMPT, logprobs=True, top_logprobs=2
    )

    choice = completion.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
    for token in choice.logprobs.content:
        assert token.logprob <= 0
        assert len(token.top_logprobs) == 2


# -- legacy completions, embeddings, models ---------------------------------------------------


def test_legacy_completions(client: OpenAI) -> None:
    completion = client.completions.create(model="gpt-4o-mini", prompt="Once upon a time", max_tokens=20)

    assert completion.object == "text_completion"
    assert completion.choices[0].text
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 20

    stream = client.completions.create(
        model="gpt-4o-mini", prompt="Once upon a time", max_tokens=20, stream=True
    )
    with stream:
        chunks = list(stream)
    assert len(chunks) > 1
    assert "".join(c.choices[0].text for c in chunks if c.choices) == completion.choices[0].text


def test_embeddings_float_and_base64_agree(client: OpenAI) -> None:
    inputs = ["the first sentence", "a second, different sentence"]
    as_float = client.embeddings.create(model="text-embedding-3-small", input=inputs, encoding_format="float")
    # The SDK asks for base64 by default and decodes it itself.
    default = client.embeddings.create(model="text-embedding-3-small", input=inputs)

    assert [e.index for e in as_float.data] == [0, 1]
    assert all(len(e.embedding) == 1536 for e in as_float.data)
    assert as_float.data[0].embedding != as_float.data[1].embedding
    for a, b in zip(as_float.data, default.data, strict=True):
        assert b.embedding == pytest.approx(a.embedding, abs=1e-6)
    assert as_float.usage.prompt_tokens > 0


def test_embeddings_dimensions(client: OpenAI) -> None:
    result = client.embeddings.create(model="text-embedding-3-small", input="short", dimensions=256)

    assert len(result.data) == 1
    assert len(result.data[0].embedding) == 256


def test_models_list_has_the_configured_aliases(client: OpenAI) -> None:
    ids = {model.id for model in client.models.list()}

    assert {"gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "claude-3-5-haiku"} <= ids
    # A wildcard alias is not a callable id; the simulator's catalogue stands in for `sim/*`.
    assert "sim/*" not in ids
    assert {"sim/gpt-4o", "sim/gpt-4o-mini"} <= ids
    for model_id in ("sim/gpt-4o-mini", "gpt-4o-mini"):
        answer = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content


# -- async ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_chat_and_stream(gateway: Proc, api_key: str) -> None:
    async with _async_client(gateway, api_key) as sdk:
        whole = await sdk.chat.completions.create(model="gpt-4o", messages=PROMPT)
        stream = await sdk.chat.completions.create(model="gpt-4o", messages=PROMPT, stream=True)
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]

    assert "".join(parts) == whole.choices[0].message.content


@pytest.mark.anyio
async def test_fifty_concurrent_requests_all_succeed(gateway: Proc, api_key: str) -> None:
    async def one(sdk: AsyncOpenAI, i: int) -> str:
        model = CHAT_MODELS[i % 3] if i % 5 else "gpt-4o"
        messages = [{"role": "user", "content": f"Question number {i}: how do caches work?"}]
        if i % 2:
            stream = await sdk.chat.completions.create(model=model, messages=messages, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        completion = await sdk.chat.completions.create(model=model, messages=messages)
        return completion.choices[0].message.content or ""

    async with _async_client(gateway, api_key) as sdk:
        answers = await asyncio.wait_for(asyncio.gather(*(one(sdk, i) for i in range(50))), timeout=90)

    assert len(answers) == 50
    assert all(answers)


# -- the npm package --------------------------------------------------------------------------

NODE_SCRIPT = r"""
import OpenAI from "openai";
const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY, maxRetries: 0, timeout: 60000 });
const messages = [{ role: "user", content: "Explain how a prompt cache saves money." }];
const whole = await client.chat.completions.create({ model: "gpt-4o", messages });
const stream = await client.chat.completions.create({ model: "gpt-4o", messages, stream: true, stream_options: { include_usage: true } });
let text = "";
let usage = null;
for await (const chunk of stream) {
  if (chunk.choices.length) text += chunk.choices[0].delta.content ?? "";
  if (chunk.usage) usage = chunk.usage;
}
console.log(JSON.stringify({ content: whole.choices[0].message.content, usage: whole.usage, streamed: text, streamUsage: usage }));
"""


@pytest.fixture(scope="session")
def node_openai(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the `openai` npm package installed and a script that uses it."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed for the npm `openai` SDK test: install Node.js 20 (node + npm)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 18:
        pytest.fail(f"the npm `openai` SDK needs Node.js 18 or newer; found {version}")
    work = tmp_path_factory.mktemp("node-openai")
    (work / "package.json").write_text('{"name": "tollgate-e2e", "private": true, "type": "module"}')
    try:
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "openai@7"],
            cwd=work, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("`npm install openai` did not finish within 180 s (is the npm registry reachable?)")
    if done.returncode != 0:
        pytest.fail(f"`npm install openai` failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    (work / "chat.mjs").write_text(NODE_SCRIPT)
    return work


def test_npm_openai_sdk_chat_and_stream(node_openai: Path, gateway: Proc, api_key: str) -> None:
    done = subprocess.run(
        ["node", "chat.mjs"], cwd=node_openai, capture_output=True, text=True, timeout=90,
        env={**os.environ, "BASE_URL": gateway.v1, "API_KEY": api_key},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)

    assert result["content"]
    assert result["usage"]["completion_tokens"] > 0
    assert result["streamed"] == result["content"]
    assert result["streamUsage"]["completion_tokens"] == result["usage"]["completion_tokens"]
