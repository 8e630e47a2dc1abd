"""The gateway in front of our own engine: `provider: local`, priced per GPU-hour, tenant-isolated."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from local_engine.random_model import build_random_model, build_tokenizer
from tests.support.procs import Proc, free_port, run_gateway, stop, team_key, wait_ready

# A prompt long enough to fill several KV blocks, so a second identical request hits the prefix cache.
LONG = "Summarise this function for me:\n" + "def f(x):\n    return x * 2 + 1\n" * 12


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    root = tmp_path_factory.mktemp("engine")
    tokenizer = build_tokenizer(root / "tokenizer")
    model_dir = build_random_model(root / "llama", "llama", tokenizer=tokenizer, seed=0)
    port = free_port()
    log = root / "engine.log"
    command = [
        sys.executable, "-m", "local_engine.cli", "serve", "--model", str(model_dir), "--port", str(port),
        "--served-model-name", "tiny-llama", "--threads", "1", "--num-kv-blocks", "512",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ)
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", proc, "engine", timeout=120, log=log)
        yield Proc(f"http://127.0.0.1:{port}", proc, log)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def gateway(engine: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    work = tmp_path_factory.mktemp("gw-local")
    # The exact cache is off: these tests repeat greedy requests to reach the engine's own
    # prefix cache, and to show greedy decoding repeats itself.
    config = f"""
store: {{backend: sqlite, path: "{work / 't.db'}"}}
stages: {{exact_cache: {{enabled: false}}}}
models:
  tiny:
    deployments:
      - provider: local
        model: tiny-llama
        api_base: "{engine.url}/v1"
        gpu_hour_usd: 3.6
        input_tokens_per_s: 10000
        output_tokens_per_s: 100
"""
    with run_gateway(work, config) as proc:
        yield proc


def _client(gateway: Proc, team: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=team_key(gateway, team), max_retries=0, timeout=120)


def test_concurrent_requests_reach_the_engine_through_the_gateway(gateway: Proc) -> None:
    client = _client(gateway, "engine-users")
    prompts = [f"Request number {i}: count to {i + 3}." for i in range(8)]

    def ask(prompt: str) -> str:
        answer = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": prompt}], max_tokens=12, temperature=0
        )
        assert answer.usage is not None and answer.usage.completion_tokens == 12
        return answer.choices[0].message.content or ""

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, prompts))
    assert len(answers) == 8 and all(answers)
    # Greedy decoding is deterministic: the same prompt alone gives the same answer as in the batch.
    assert ask(prompts[3]) == answers[3]
    client.close()


def test_streams_pass_through_and_cost_follows_the_gpu_hour_price(gateway: Proc) -> None:
    client = _client(gateway, "engine-stream")
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "stream please"}], max_tokens=10,
        temperature=0, stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10
    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "price me"}], max_tokens=10, temperature=0
    )
    usage = raw.parse().usage
    assert usage is not None
    # $3.6/GPU-hour = $0.001/s; 10,000 input tok/s and 100 output tok/s.
    uncached = usage.prompt_tokens - (usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0)
    expected = Decimal("0.001") * uncached / 10000 + Decimal("0.001") * usage.completion_tokens / 100
    assert Decimal(raw.headers["x-tollgate-cost-usd"]) == pytest.approx(expected, rel=Decimal("1e-6"))
    client.close()


def _cached_tokens(client: openai.OpenAI, **extra: object) -> int:
    answer = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": LONG}], max_tokens=2, temperature=0, **extra  # type: ignore[arg-type]
    )
    assert answer.usage is not None and answer.usage.prompt_tokens_details is not None
    return answer.usage.prompt_tokens_details.cached_tokens or 0


def test_teams_never_share_the_engine_prefix_cache(gateway: Proc) -> None:
    alpha, beta = _client(gateway, "alpha"), _client(gateway, "beta")
    with contextlib.ExitStack() as closing:
        closing.callback(alpha.close)
        closing.callback(beta.close)
        assert _cached_tokens(alpha) == 0
        assert _cached_tokens(alpha) > 0  # the same team reuses its own prefix
        assert _cached_tokens(beta) == 0  # another team does not see it
        # A client cannot claim another team's tenant: the gateway sets it from the key.
        spoofer = openai.OpenAI(base_url=gateway.v1, api_key=team_key(gateway, "gamma"), max_retries=0,
                                default_headers={"x-tollgate-tenant": "alpha"}, timeout=120)  # fmt: skip
        closing.callback(spoofer.close)
        assert _cached_tokens(spoofer) == 0


def test_gpu_hour_pricing_needs_measured_throughput(tmp_path: Path) -> None:
    from gateway.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="gpu_hour_usd needs input_tokens_per_s and output_tokens_per_s"):
        parse_config({"models": {"m": {"deployments": [
            {"provider": "local", "model": "x", "api_base": "http://127.0.0.1:1/v1", "gpu_hour_usd": 2}
        ]}}})  # fmt: skip
