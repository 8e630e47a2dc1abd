"""List prices from litellm's bundled price map, read as data.

litellm ships the map as a JSON file inside its package; with LITELLM_LOCAL_MODEL_COST_MAP
set it is exactly what `litellm.model_cost` holds. Reading the file directly takes
milliseconds where importing litellm takes seconds, and keeps litellm itself behind its one
adapter module (gateway/providers/litellm_adapter.py).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("tollgate.prices")


@dataclass(frozen=True, slots=True)
class PriceEntry:
    """USD per token, as litellm's price map states it (converted exactly from its floats).

    None means the map states no such price; `Price` then falls back to the plain rate
    (cache reads and writes to the input rate, batch to the online rate).
    """

    input_per_token: Decimal
    output_per_token: Decimal
    cached_input_per_token: Decimal | None
    cache_write_per_token: Decimal | None = None
    batch_input_per_token: Decimal | None = None
    batch_output_per_token: Decimal | None = None


def _decimal(value: Any) -> Decimal | None:
    # repr() of the map's float is its shortest exact decimal form: 2.5e-06 -> Decimal("0.0000025").
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return Decimal(repr(value))


@functools.cache
def _cost_map() -> Mapping[str, Any]:
    """litellm's bundled price map, read from its JSON file without importing litellm.

    It is the very file `litellm.model_cost` is loaded from offline
    (LITELLM_LOCAL_MODEL_COST_MAP=True); reading it directly takes milliseconds where
    importing litellm takes seconds, so a gateway that never calls litellm never imports it.
    """
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return {}
    path = Path(spec.origin).parent / "model_prices_and_context_window_backup.json"
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        log.error("litellm's price map could not be read; every model is unpriced", extra={"path": str(path)})
        return {}
    return data if isinstance(data, dict) else {}


def _entries(model: str) -> list[Mapping[str, Any]]:
    """The map's entries for `model`: the name as given, then without its prefix (`sim/`, `openai/`)."""
    cost_map = _cost_map()
    names = [model, model.split("/", 1)[1]] if "/" in model else [model]
    return [entry for name in names if name != "sample_spec" and isinstance(entry := cost_map.get(name), Mapping)]


def price_per_token(model: str) -> PriceEntry | None:
    """List price of `model` from litellm's bundled map; the name as given, then without its prefix."""
    for entry in _entries(model):
        input_cost = _decimal(entry.get("input_cost_per_token"))
        output_cost = _decimal(entry.get("output_cost_per_token"))
        if input_cost is None:
            continue
        return PriceEntry(
            input_per_token=input_cost,
            # Embedding models have no output price: they produce no tokens.
            output_per_token=output_cost if output_cost is not None else Decimal(0),
            cached_input_per_token=_decimal(entry.get("cache_read_input_token_cost")),
            # The base (5-minute) write price; litellm's `_above_1hr` variant is not modelled.
            cache_write_per_token=_decimal(entry.get("cache_creation_input_token_cost")),
            batch_input_per_token=_decimal(entry.get("input_cost_per_token_batches")),
            batch_output_per_token=_decimal(entry.get("output_cost_per_token_batches")),
        )
    return None


def max_output_tokens(model: str) -> int | None:
    """The most tokens `model` can answer with, per litellm's map."""
    for entry in _entries(model):
        value = entry.get("max_output_tokens") or entry.get("max_tokens")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
