"""What a model's tokens cost: prices are data, in USD per million tokens, and money is Decimal.

A price comes from the config's overrides when one names the model, otherwise from
litellm's bundled price map (read as data by `price_map`, without importing litellm). A `sim/<name>` model is priced like `<name>`, so the simulated provider's
demo shows real money. An unknown model has no price (None): the request is still served,
it is just not costed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from gateway.accounting.price_map import PriceEntry, price_per_token
from gateway.config import PriceOverride
from gateway.providers.base import Usage

log = logging.getLogger("tollgate.prices")

_MILLION = Decimal(1_000_000)
_SIM_PREFIX = "sim/"


@dataclass(frozen=True, slots=True)
class Price:
    """One model's rates in USD per million tokens.

    An optional rate that is None was not stated, and the plain rate applies instead: cache
    reads and writes cost the input rate, batch requests the online rates. Assuming no
    discount is the honest default; a missing price is never read as free.
    """

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    batch_input_per_mtok: Decimal | None = None
    batch_output_per_mtok: Decimal | None = None

    @classmethod
    def from_override(cls, override: PriceOverride) -> Price:
        return cls(
            input_per_mtok=override.input_per_mtok,
            output_per_mtok=override.output_per_mtok,
            cached_input_per_mtok=override.cached_input_per_mtok,
            cache_write_per_mtok=override.cache_write_per_mtok,
            batch_input_per_mtok=override.batch_input_per_mtok,
            batch_output_per_mtok=override.batch_output_per_mtok,
        )

    @classmethod
    def from_entry(cls, entry: PriceEntry) -> Price:
        return cls(
            input_per_mtok=_per_mtok(entry.input_per_token),
            output_per_mtok=_per_mtok(entry.output_per_token),
            cached_input_per_mtok=_optional_per_mtok(entry.cached_input_per_token),
            cache_write_per_mtok=_optional_per_mtok(entry.cache_write_per_token),
            batch_input_per_mtok=_optional_per_mtok(entry.batch_input_per_token),
            batch_output_per_mtok=_optional_per_mtok(entry.batch_output_per_token),
        )

    def cost(self, usage: Usage, *, batch: bool = False) -> Decimal:
        """USD for `usage`, split by how each token is billed.

        `prompt_tokens` counts every input token (OpenAI's convention), so the cache reads
        and writes are carved out of it: each token is billed once, at its own rate. Counts
        a provider over-reported are clamped so that no token is billed twice. Reasoning
        tokens are part of `completion_tokens` and billed with them at the output rate.

        `batch=True` bills uncached input and output at the batch rates. Cache reads and
        writes keep their own rates even there: litellm states batch cache prices for a
        few models, which this does not model.
        """
        prompt = max(usage.prompt_tokens, 0)
        cached = min(max(usage.cached_prompt_tokens, 0), prompt)
        written = min(max(usage.cache_write_tokens, 0), prompt - cached)
        uncached = prompt - cached - written
        input_rate, output_rate = self.input_per_mtok, self.output_per_mtok
        if batch:
            input_rate = _or(self.batch_input_per_mtok, self.input_per_mtok)
            output_rate = _or(self.batch_output_per_mtok, self.output_per_mtok)
        total = (
            uncached * input_rate
            + cached * _or(self.cached_input_per_mtok, self.input_per_mtok)
            + written * _or(self.cache_write_per_mtok, self.input_per_mtok)
            + max(usage.completion_tokens, 0) * output_rate
        )
        return total / _MILLION


def _or(rate: Decimal | None, fallback: Decimal) -> Decimal:
    return fallback if rate is None else rate


def _optional_per_mtok(per_token: Decimal | None) -> Decimal | None:
    return None if per_token is None else _per_mtok(per_token)


def _per_mtok(per_token: Decimal) -> Decimal:
    # 0.0000025 * 10^6 = 2.5000000: drop the trailing zeros, without turning 10 into 1E+1.
    value = per_token * _MILLION
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


_MEMO_LIMIT = 4096


class PriceTable:
    """Prices by model name: config overrides first, then litellm's map; memoised per name.

    A model with no price is served but not costed (None, never zero), and logged once per
    name so an operator sees which prices to add without a warning on every request.
    """

    def __init__(
        self,
        overrides: Mapping[str, PriceOverride] | None = None,
        *,
        lookup: Callable[[str], PriceEntry | None] = price_per_token,
    ) -> None:
        self._overrides = dict(overrides or {})
        self._lookup = lookup
        self._memo: dict[str, Price | None] = {}
        # Names already warned about; bounded like the memo, so at worst a name warns again.
        self._warned: set[str] = set()

    def price(self, model: str) -> Price | None:
        price = self._memoised(model)
        if price is None and model not in self._warned:
            if len(self._warned) >= _MEMO_LIMIT:
                self._warned.clear()
            self._warned.add(model)
            log.warning(
                "no price known for model %r; its requests are not costed", model, extra={"model": model}
            )
        return price

    def _memoised(self, model: str) -> Price | None:
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
            # Through the memo but without a warning: the name the client used is the one to report.
            return self._memoised(model[len(_SIM_PREFIX) :])
        entry = self._lookup(model)
        return None if entry is None else Price.from_entry(entry)

    def warm(self, models: Iterable[str]) -> None:
        """Resolve these names now, so the first request pays nothing for the lookup."""
        for model in models:
            self.price(model)

    def cost(
        self, model: str, usage: Usage, *, override: PriceOverride | None = None, batch: bool = False
    ) -> Decimal | None:
        """USD for `usage` on `model`, or None when no price is known.

        `override` (a deployment's own price) wins over the table; `batch` bills at batch rates.
        """
        price = Price.from_override(override) if override is not None else self.price(model)
        return None if price is None else price.cost(usage, batch=batch)
