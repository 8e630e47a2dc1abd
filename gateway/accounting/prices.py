"""What a model's tokens cost: prices are data, in USD per million tokens, and money is Decimal.

A price comes from the config's overrides when one names the model, otherwise from
litellm's bundled price map (read through the litellm adapter, which imports litellm only
on first use). A `sim/<name>` model is priced like `<name>`, so the simulated provider's
demo shows real money. An unknown model has no price (None): the request is still served,
it is just not costed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from gateway.accounting.price_map import PriceEntry, price_per_token
from gateway.config import PriceOverride
from gateway.providers.base import Usage

_MILLION = Decimal(1_000_000)
_SIM_PREFIX = "sim/"


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    # None: the provider has no discount for cached prompt tokens; they cost the input rate.
    cached_input_per_mtok: Decimal | None

    @classmethod
    def from_override(cls, override: PriceOverride) -> Price:
        return cls(override.input_per_mtok, override.output_per_mtok, override.cached_input_per_mtok)

    @classmethod
    def from_entry(cls, entry: PriceEntry) -> Price:
        cached = entry.cached_input_per_token
        return cls(
            input_per_mtok=_per_mtok(entry.input_per_token),
            output_per_mtok=_per_mtok(entry.output_per_token),
            cached_input_per_mtok=None if cached is None else _per_mtok(cached),
        )

    def cost(self, usage: Usage) -> Decimal:
        # OpenAI's prompt_tokens include the cached ones; bill those at the cached rate.
        cached = min(max(usage.cached_prompt_tokens, 0), usage.prompt_tokens)
        uncached = usage.prompt_tokens - cached
        cached_rate = (
            self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok
        )
        total = (
            uncached * self.input_per_mtok
            + cached * cached_rate
            + usage.completion_tokens * self.output_per_mtok
        )
        return total / _MILLION


def _per_mtok(per_token: Decimal) -> Decimal:
    # 0.0000025 * 10^6 = 2.5000000: drop the trailing zeros, without turning 10 into 1E+1.
    value = per_token * _MILLION
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


_MEMO_LIMIT = 4096


class PriceTable:
    """Prices by model name: config overrides first, then litellm's map; memoised per name."""

    def __init__(
        self,
        overrides: Mapping[str, PriceOverride] | None = None,
        *,
        lookup: Callable[[str], PriceEntry | None] = price_per_token,
    ) -> None:
        self._overrides = dict(overrides or {})
        self._lookup = lookup
        self._memo: dict[str, Price | None] = {}

    def price(self, model: str) -> Price | None:
        if model in self._memo:
            return self._memo[model]
        price = self._resolve(model)
        if len(self._memo) >= _MEMO_LIMIT:
            # Wildcard aliases let clients name any model: never let their names grow memory.
            self._memo.clear()
        self._memo[model] = price
        return price

    def _resolve(self, model: str) -> Price | None:
        override = self._overrides.get(model)
        if override is not None:
            return Price.from_override(override)
        if model.startswith(_SIM_PREFIX) and len(model) > len(_SIM_PREFIX):
            return self.price(model[len(_SIM_PREFIX) :])
        entry = self._lookup(model)
        return None if entry is None else Price.from_entry(entry)

    def warm(self, models: Iterable[str]) -> None:
        """Resolve these names now, so the first request pays nothing for the lookup."""
        for model in models:
            self.price(model)

    def cost(self, model: str, usage: Usage, *, override: PriceOverride | None = None) -> Decimal | None:
        """USD for `usage` on `model`; `override` (a deployment's own price) wins over the table."""
        price = Price.from_override(override) if override is not None else self.price(model)
        return None if price is None else price.cost(usage)
