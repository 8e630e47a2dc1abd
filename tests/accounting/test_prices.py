"""Prices from litellm's bundled map and from config overrides, in USD per million tokens."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest

from gateway.accounting.price_map import PriceEntry, price_per_token
from gateway.accounting.prices import Price, PriceTable
from gateway.config import PriceOverride
from gateway.providers.base import Usage


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable()


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", Price(Decimal("2.5"), Decimal("10"), Decimal("1.25"))),
        ("gpt-4o-mini", Price(Decimal("0.15"), Decimal("0.6"), Decimal("0.075"))),
        ("claude-haiku-4-5", Price(Decimal("1"), Decimal("5"), Decimal("0.1"))),
        # Embedding models bill input only, and have no cached rate.
        ("text-embedding-3-small", Price(Decimal("0.02"), Decimal("0"), None)),
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


def test_cost_is_tokens_times_price_per_million(table: PriceTable) -> None:
    # gpt-4o: 1000 x $2.5/M + 500 x $10/M
    assert table.cost("gpt-4o", Usage(prompt_tokens=1000, completion_tokens=500)) == Decimal("0.0075")


def test_cached_prompt_tokens_are_billed_at_the_cached_rate(table: PriceTable) -> None:
    uncached = table.cost("gpt-4o", Usage(prompt_tokens=1000, completion_tokens=0))
    cached = table.cost("gpt-4o", Usage(prompt_tokens=1000, completion_tokens=0, cached_prompt_tokens=800))
    assert uncached == Decimal("0.0025")
    # 200 x $2.5/M + 800 x $1.25/M
    assert cached == Decimal("0.0015")


def test_without_a_cached_rate_cached_tokens_cost_the_input_rate() -> None:
    table = PriceTable({"house-model": PriceOverride(input_per_mtok=Decimal(2), output_per_mtok=Decimal(4))})
    usage = Usage(prompt_tokens=1000, completion_tokens=0, cached_prompt_tokens=1000)
    assert table.cost("house-model", usage) == Decimal("0.002")


def test_cached_tokens_beyond_the_prompt_are_not_billed_twice(table: PriceTable) -> None:
    usage = Usage(prompt_tokens=100, completion_tokens=0, cached_prompt_tokens=500)
    assert table.cost("gpt-4o", usage) == Decimal("0.000125")


def test_a_config_override_wins_over_litellms_map() -> None:
    override = PriceOverride(
        input_per_mtok=Decimal("1"), output_per_mtok=Decimal("2"), cached_input_per_mtok=Decimal("0.5")
    )
    table = PriceTable({"gpt-4o": override})
    assert table.price("gpt-4o") == Price(Decimal("1"), Decimal("2"), Decimal("0.5"))
    # ... and the simulated gpt-4o follows it.
    assert table.price("sim/gpt-4o") == Price(Decimal("1"), Decimal("2"), Decimal("0.5"))


def test_an_override_for_the_simulated_name_itself_wins_over_the_imitated_model() -> None:
    override = PriceOverride(input_per_mtok=Decimal("0"), output_per_mtok=Decimal("0"))
    table = PriceTable({"sim/gpt-4o": override})
    assert table.price("sim/gpt-4o") == Price(Decimal("0"), Decimal("0"), None)
    assert table.price("gpt-4o") == Price(Decimal("2.5"), Decimal("10"), Decimal("1.25"))


def test_a_deployment_override_passed_to_cost_wins_over_the_table(table: PriceTable) -> None:
    override = PriceOverride(input_per_mtok=Decimal("3"), output_per_mtok=Decimal("6"))
    usage = Usage(prompt_tokens=1000, completion_tokens=1000)
    assert table.cost("gpt-4o", usage, override=override) == Decimal("0.009")
    # A deployment override prices even a model no map knows.
    assert table.cost("no-such-model", usage, override=override) == Decimal("0.009")


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
    assert entry == PriceEntry(Decimal("0.00000015"), Decimal("0.0000006"), Decimal("0.000000075"))
    assert price_per_token("openai/gpt-4o-mini") == entry
    assert price_per_token("no-such-provider/no-such-model") is None


def test_importing_the_price_table_does_not_import_litellm() -> None:
    code = "import sys, gateway.accounting.prices; print('litellm' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
