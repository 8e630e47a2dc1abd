"""`stages.context` config: validated at load time, errors naming the key."""

from __future__ import annotations

import re

import pytest

from gateway.config import ConfigError, parse_config
from gateway.dispatch import Dispatcher
from gateway.keys import KeyRing
from gateway.stages.registry import REGISTRY, StageDeps
from gateway.store.memory import MemoryStore
from tests.context.support import PRICES


def test_defaults() -> None:
    context = parse_config({}).stages.context
    assert context.enabled and context.tool_selection.enabled and context.prune_tool_results.enabled
    assert (context.tool_selection.max_tools, context.tool_selection.top_k) == (20, 5)
    assert context.history.active is False


def test_history_switches_on_with_a_summary_model() -> None:
    assert parse_config(
        {"stages": {"context": {"history": {"summary_model": "m"}}}}
    ).stages.context.history.active


def test_history_cannot_be_on_without_a_summary_model() -> None:
    with pytest.raises(ConfigError, match=r"stages\.context\.history.*summary_model"):
        parse_config({"stages": {"context": {"history": {"enabled": True}}}})


def test_unknown_keys_name_themselves() -> None:
    with pytest.raises(ConfigError, match=r"stages\.context\.tool_selection\.topk"):
        parse_config({"stages": {"context": {"tool_selection": {"topk": 3}}}})


def test_an_unknown_summary_model_is_refused_at_start() -> None:
    config = parse_config({"stages": {"context": {"history": {"summary_model": "nope"}}}})
    store = MemoryStore()
    deps = StageDeps(store=store, keys=KeyRing(store), dispatcher=Dispatcher(config, {}), prices=PRICES)
    with pytest.raises(
        ConfigError, match=re.escape("stages.context.history.summary_model: unknown model alias 'nope'")
    ):
        REGISTRY["context"](config, deps)
