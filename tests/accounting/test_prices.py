"""Prices from litellm's bundled map and from config overrides, in USD per million tokens."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest

from gateway.accounting.price_map import PriceEntry, price_per_token
from gateway.accounting.prices import Price, PriceTable
from gateway.config import Deployment, PriceOverride
from gateway.providers.base import Usage

D = Decimal


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable()


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", Price(D("2.5"), D("10"), D("1.25"), None, D("1.25"), D("5"))),
        ("gpt-4o-mini", Price(D("0.15"), D("0.6"), D("0.075"), None, D("0.075"), D("0.3"))),
        ("claude-haiku-4-5", Price(D("1"), D("5"), D("0.1"), D("1.25"), D("0.5"), D("2.5"))),
        # Embedding models bill input only, and have no cached rate.
        ("text-embedding-3-small", Price(D("0.02"), D("0"), None, None, D("0.01"), D("0"))),
        # No cache-write or batch price in the map: those stay unstated, never invented.
        ("deepseek-chat", Price(D("0.28"), D("0.42"), D("0.028"))),
    ],
)
def test_list_prices_come_from_litellms_bundled_map(table: PriceTable, model: str, expected: Price) -> None:
    assert table.price(model) == expected


def test_prices_are_decimal_and_read_as_written(table: PriceTable) -> None:
    price = table.price("gpt-4o")
    assert price is not None
    assert isinstance(price.input_per_mtok, Decimal)
    assert (str(price.input_per_mtok), str(price.output_per_mtok), str(price.cached_input_per_mtok)) == (
        "2.5",
        "10",
        "1.25",
    )


def test_a_provider_prefix_is_ignored_when_the_map_has_only_the_bare_name(table: PriceTable) -> None:
    assert table.price("openai/gpt-4o") == table.price("gpt-4o")
    assert table.price("anthropic/claude-haiku-4-5") == table.price("claude-haiku-4-5")


def test_a_simulated_model_is_priced_like_the_model_it_imitates(table: PriceTable) -> None:
    assert table.price("sim/gpt-4o") == table.price("gpt-4o")
    usage = Usage(prompt_tokens=1200, completion_tokens=300, cached_prompt_tokens=200)
    assert table.cost("sim/gpt-4o", usage) == table.cost("gpt-4o", usage)


@pytest.mark.parametrize("model", ["no-such-model", "sim/no-such-model", "sim/", "", "sample_spec"])
def test_an_unknown_model_has_no_price_and_no_cost(table: PriceTable, model: str) -> None:
    assert table.price(model) is None
    assert table.cost(model, Usage(prompt_tokens=10, completion_tokens=10)) is None


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "tollgate.prices" and r.levelno == logging.WARNING
    ]


def test_an_unknown_model_is_logged_once_by_the_name_the_client_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = PriceTable()
    usage = Usage(prompt_tokens=10, completion_tokens=10)
    with caplog.at_level(logging.WARNING, logger="tollgate.prices"):
        for _ in range(3):
            assert table.cost("sim/no-such-model", usage) is None
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "sim/no-such-model" in warnings[0]


def test_each_unknown_name_warns_once_and_a_known_one_never(caplog: pytest.LogCaptureFixture) -> None:
    table = PriceTable()
    with caplog.at_level(logging.WARNING, logger="tollgate.prices"):
        for _ in range(2):
            table.price("no-such-model")
            table.price("other-unknown")
            table.price("gpt-4o")
    warnings = _warnings(caplog)
    assert len(warnings) == 2
    assert "'no-such-model'" in warnings[0] and "'other-unknown'" in warnings[1]


def test_a_deployment_override_prices_an_unknown_model_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    override = PriceOverride(input_per_mtok=D(1), output_per_mtok=D(1))
    with caplog.at_level(logging.WARNING, logger="tollgate.prices"):
        cost = PriceTable().cost(
            "no-such-model", Usage(prompt_tokens=1, completion_tokens=0), override=override
        )
    assert cost == D("0.000001")
    assert _warnings(caplog) == []


def test_cost_is_tokens_times_price_per_million(table: PriceTable) -> None:
    # gpt-4o: 1000 x $2.5/M + 500 x $10/M
    assert table.cost("gpt-4o", Usage(prompt_tokens=1000, completion_tokens=500)) == D("0.0075")


def test_cached_prompt_tokens_are_billed_at_the_cached_rate(table: PriceTable) -> None:
    uncached = table.cost("gpt-4o", Usage(prompt_tokens=1000, completion_tokens=0))
    cached = table.cost("gpt-4o", Usage(prompt_tokens=1000, completion_tokens=0, cached_prompt_tokens=800))
    assert uncached == D("0.0025")
    # 200 x $2.5/M + 800 x $1.25/M
    assert cached == D("0.0015")


def test_without_a_cached_rate_cached_tokens_cost_the_input_rate() -> None:
    table = PriceTable({"house-model": PriceOverride(input_per_mtok=D(2), output_per_mtok=D(4))})
    usage = Usage(prompt_tokens=1000, completion_tokens=0, cached_prompt_tokens=1000)
    assert table.cost("house-model", usage) == D("0.002")


def test_without_a_cache_write_rate_written_tokens_cost_the_input_rate(table: PriceTable) -> None:
    # deepseek-chat states no cache-write price: a written token is billed like any input token.
    written = Usage(prompt_tokens=1000, completion_tokens=0, cache_write_tokens=600)
    assert table.cost("deepseek-chat", written) == table.cost("deepseek-chat", Usage(prompt_tokens=1000))


def test_cached_tokens_beyond_the_prompt_are_not_billed_twice(table: PriceTable) -> None:
    usage = Usage(prompt_tokens=100, completion_tokens=0, cached_prompt_tokens=500)
    assert table.cost("gpt-4o", usage) == D("0.000125")


def test_cache_reads_and_writes_beyond_the_prompt_are_clamped(table: PriceTable) -> None:
    # claude-haiku-4-5: 100 prompt tokens, 80 read ($0.1/M), the 20 left written ($1.25/M); none fresh.
    usage = Usage(prompt_tokens=100, cached_prompt_tokens=80, cache_write_tokens=70)
    assert table.cost("claude-haiku-4-5", usage) == D("0.000033")
    assert table.cost("claude-haiku-4-5", Usage(prompt_tokens=-5, completion_tokens=-5)) == 0


def test_a_config_override_wins_over_litellms_map() -> None:
    override = PriceOverride(input_per_mtok=D("1"), output_per_mtok=D("2"), cached_input_per_mtok=D("0.5"))
    table = PriceTable({"gpt-4o": override})
    assert table.price("gpt-4o") == Price(D("1"), D("2"), D("0.5"))
    # ... and the simulated gpt-4o follows it.
    assert table.price("sim/gpt-4o") == Price(D("1"), D("2"), D("0.5"))


def test_an_override_for_the_simulated_name_itself_wins_over_the_imitated_model() -> None:
    override = PriceOverride(input_per_mtok=D("0"), output_per_mtok=D("0"))
    table = PriceTable({"sim/gpt-4o": override})
    assert table.price("sim/gpt-4o") == Price(D("0"), D("0"), None)
    assert table.price("gpt-4o") == Price(D("2.5"), D("10"), D("1.25"), None, D("1.25"), D("5"))


def test_an_override_states_every_rate_and_each_is_used() -> None:
    override = PriceOverride(
        input_per_mtok=D("4"),
        output_per_mtok=D("8"),
        cached_input_per_mtok=D("0.4"),
        cache_write_per_mtok=D("5"),
        batch_input_per_mtok=D("2"),
        batch_output_per_mtok=D("3"),
    )
    assert Price.from_override(override) == Price(D("4"), D("8"), D("0.4"), D("5"), D("2"), D("3"))
    usage = Usage(prompt_tokens=1000, completion_tokens=100, cached_prompt_tokens=300, cache_write_tokens=200)
    table = PriceTable()
    # 500 x 4 + 300 x 0.4 + 200 x 5 + 100 x 8, per million
    assert table.cost("any", usage, override=override) == D("0.00392")
    # batch: 500 x 2 + 300 x 0.4 + 200 x 5 + 100 x 3
    assert table.cost("any", usage, override=override, batch=True) == D("0.00242")


def test_a_deployment_override_passed_to_cost_wins_over_the_table(table: PriceTable) -> None:
    override = PriceOverride(input_per_mtok=D("3"), output_per_mtok=D("6"))
    usage = Usage(prompt_tokens=1000, completion_tokens=1000)
    assert table.cost("gpt-4o", usage, override=override) == D("0.009")
    # A deployment override prices even a model no map knows.
    assert table.cost("no-such-model", usage, override=override) == D("0.009")
    # With no batch rates stated, a batch request costs the online price.
    assert table.cost("gpt-4o", usage, override=override, batch=True) == D("0.009")


def test_a_local_engines_derived_price_still_costs_requests(table: PriceTable) -> None:
    deployment = Deployment(
        provider="local",
        model="tiny",
        api_base="http://127.0.0.1:1",
        gpu_hour_usd=D("3.6"),
        input_tokens_per_s=1000,
        output_tokens_per_s=100,
    )
    price = deployment.effective_price()
    assert price is not None
    # $0.001 per GPU-second: an input token $0.000001, an output token $0.00001, a cache hit nothing.
    usage = Usage(prompt_tokens=1000, completion_tokens=100, cached_prompt_tokens=400)
    assert table.cost("tiny", usage, override=price) == D("0.0016")
    # The derived price states no cache-write or batch rate: writes cost input, batch costs online.
    written = Usage(prompt_tokens=1000, completion_tokens=100, cache_write_tokens=400)
    assert table.cost("tiny", written, override=price) == table.cost("tiny", Usage(1000, 100), override=price)
    assert table.cost("tiny", usage, override=price, batch=True) == D("0.0016")


def test_lookups_are_memoised_per_name() -> None:
    asked: list[str] = []

    def lookup(model: str) -> PriceEntry | None:
        asked.append(model)
        return price_per_token(model)

    table = PriceTable(lookup=lookup)
    for _ in range(3):
        table.price("gpt-4o")
        table.price("sim/gpt-4o")
        table.price("no-such-model")
    assert asked == ["gpt-4o", "no-such-model"]


def test_the_adapters_lookup_reads_litellms_map_exactly_per_token() -> None:
    entry = price_per_token("gpt-4o-mini")
    assert entry == PriceEntry(
        input_per_token=D("0.00000015"),
        output_per_token=D("0.0000006"),
        cached_input_per_token=D("0.000000075"),
        cache_write_per_token=None,
        batch_input_per_token=D("0.000000075"),
        batch_output_per_token=D("0.0000003"),
    )
    assert price_per_token("openai/gpt-4o-mini") == entry
    assert price_per_token("no-such-provider/no-such-model") is None


def test_importing_the_price_table_does_not_import_litellm() -> None:
    code = "import sys, gateway.accounting.prices; print('litellm' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


# --- exact costs against the rates litellm itself holds -------------------------------------


@pytest.fixture(scope="module")
def model_cost() -> dict[str, Any]:
    litellm = importlib.import_module("litellm")
    cost: dict[str, Any] = litellm.model_cost
    return cost


def _rate(model_cost: dict[str, Any], model: str, key: str) -> Decimal:
    return Decimal(repr(model_cost[model][key]))


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini"])
def test_openai_usage_without_cache_costs_litellms_rates(
    table: PriceTable, model_cost: dict[str, Any], model: str
) -> None:
    usage = Usage.from_openai({"prompt_tokens": 1234, "completion_tokens": 567, "total_tokens": 1801})
    assert usage is not None
    expected = 1234 * _rate(model_cost, model, "input_cost_per_token") + 567 * _rate(
        model_cost, model, "output_cost_per_token"
    )
    assert table.cost(model, usage) == expected


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini"])
def test_openai_usage_with_cached_tokens_costs_litellms_rates(
    table: PriceTable, model_cost: dict[str, Any], model: str
) -> None:
    usage = Usage.from_openai(
        {"prompt_tokens": 3000, "completion_tokens": 200, "prompt_tokens_details": {"cached_tokens": 2048}}
    )
    assert usage is not None
    expected = (
        952 * _rate(model_cost, model, "input_cost_per_token")
        + 2048 * _rate(model_cost, model, "cache_read_input_token_cost")
        + 200 * _rate(model_cost, model, "output_cost_per_token")
    )
    assert table.cost(model, usage) == expected


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "claude-sonnet-4-5"])
def test_anthropic_cache_reads_and_writes_cost_litellms_rates(
    table: PriceTable, model_cost: dict[str, Any], model: str
) -> None:
    usage = Usage.from_anthropic(
        {
            "input_tokens": 100,
            "cache_read_input_tokens": 2000,
            "cache_creation_input_tokens": 500,
            "output_tokens": 50,
        }
    )
    assert usage is not None
    expected = (
        100 * _rate(model_cost, model, "input_cost_per_token")
        + 2000 * _rate(model_cost, model, "cache_read_input_token_cost")
        + 500 * _rate(model_cost, model, "cache_creation_input_token_cost")
        + 50 * _rate(model_cost, model, "output_cost_per_token")
    )
    assert table.cost(model, usage) == expected
    assert table.cost(f"anthropic/{model}", usage) == expected


@pytest.mark.parametrize("model", ["o1", "o3-mini"])
def test_reasoning_tokens_are_billed_once_inside_the_completion(
    table: PriceTable, model_cost: dict[str, Any], model: str
) -> None:
    usage = Usage.from_openai(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 3000,
            "completion_tokens_details": {"reasoning_tokens": 2500},
        }
    )
    assert usage is not None and usage.reasoning_tokens == 2500
    expected = 1000 * _rate(model_cost, model, "input_cost_per_token") + 3000 * _rate(
        model_cost, model, "output_cost_per_token"
    )
    assert table.cost(model, usage) == expected
    assert table.cost(model, Usage(prompt_tokens=1000, completion_tokens=3000)) == expected


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"])
def test_batch_requests_cost_litellms_batch_rates(
    table: PriceTable, model_cost: dict[str, Any], model: str
) -> None:
    usage = Usage(prompt_tokens=10_000, completion_tokens=2_000)
    expected = 10_000 * _rate(model_cost, model, "input_cost_per_token_batches") + 2_000 * _rate(
        model_cost, model, "output_cost_per_token_batches"
    )
    assert table.cost(model, usage, batch=True) == expected
    online = table.cost(model, usage)
    assert online is not None and expected <= online


def test_batch_cache_reads_and_writes_keep_their_own_rates(
    table: PriceTable, model_cost: dict[str, Any]
) -> None:
    model = "claude-haiku-4-5"
    usage = Usage(prompt_tokens=1000, completion_tokens=100, cached_prompt_tokens=600, cache_write_tokens=300)
    expected = (
        100 * _rate(model_cost, model, "input_cost_per_token_batches")
        + 600 * _rate(model_cost, model, "cache_read_input_token_cost")
        + 300 * _rate(model_cost, model, "cache_creation_input_token_cost")
        + 100 * _rate(model_cost, model, "output_cost_per_token_batches")
    )
    assert table.cost(model, usage, batch=True) == expected


def test_a_model_without_batch_rates_costs_the_online_price_in_a_batch(
    table: PriceTable, model_cost: dict[str, Any]
) -> None:
    assert "input_cost_per_token_batches" not in model_cost["deepseek-chat"]
    usage = Usage(prompt_tokens=1000, completion_tokens=100, cached_prompt_tokens=200)
    assert table.cost("deepseek-chat", usage, batch=True) == table.cost("deepseek-chat", usage)


@pytest.mark.parametrize(
    ("model", "usage"),
    [
        ("gpt-4o", Usage(prompt_tokens=3000, completion_tokens=200, cached_prompt_tokens=2048)),
        ("claude-haiku-4-5", Usage(2600, 50, cached_prompt_tokens=2000, cache_write_tokens=500)),
    ],
)
def test_costs_agree_with_litellms_own_calculation(
    table: PriceTable, model_cost: dict[str, Any], model: str, usage: Usage
) -> None:
    litellm = importlib.import_module("litellm")
    types = litellm.types.utils
    details = types.PromptTokensDetailsWrapper(
        cached_tokens=usage.cached_prompt_tokens, cache_creation_tokens=usage.cache_write_tokens
    )
    theirs = types.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        prompt_tokens_details=details,
        cache_creation_input_tokens=usage.cache_write_tokens,
        cache_read_input_tokens=usage.cached_prompt_tokens,
    )
    prompt_cost, completion_cost = litellm.cost_per_token(model=model, usage_object=theirs)
    ours = table.cost(model, usage)
    # litellm adds floats; equal to well within a float's precision.
    assert ours is not None and float(ours) == pytest.approx(prompt_cost + completion_cost, rel=1e-12)
