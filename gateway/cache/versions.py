"""The config an answer depends on beyond the request itself.

A cached answer is only valid while everything that produced it is unchanged: the stages
after the cache that can change an answer (context, compression, routing ...) and the
requested alias's deployments and fallbacks. Their config is hashed into a version that is
part of every cache key, so a changed deployment or stage never meets an old answer.
"""

from __future__ import annotations

from typing import Any

from gateway.cache.keys import digest
from gateway.config import Config, ModelAlias
from gateway.dispatch import Dispatcher
from gateway.errors import TollgateError
from gateway.pipeline import CANONICAL_ORDER

# Deployment fields that change who is billed, or how long to wait, but not the answer.
_NOT_ANSWER = {"api_key", "api_key_env", "timeout_s", "price", "gpu_hour_usd", "input_tokens_per_s",
               "output_tokens_per_s"}  # fmt: skip
_LIMIT = 4096


class AnswerVersions:
    """Versions for the cache stage `stage`: the config of the stages after it, and the alias's."""

    def __init__(self, config: Config, dispatcher: Dispatcher, *, stage: str) -> None:
        later = CANONICAL_ORDER[CANONICAL_ORDER.index(stage) + 1 :]
        stages = config.stages.model_dump(mode="json")
        self._stages = digest({name: stages[name] for name in later if name in stages}, size=8)
        self._models = config.models
        self._dispatcher = dispatcher
        self._versions: dict[str, str | None] = {}

    def __call__(self, model: str) -> str | None:
        """The version for requests to `model`; None for a model no alias serves."""
        if model in self._versions:
            return self._versions[model]
        try:
            target = self._dispatcher.resolve(model)
        except TollgateError:
            version = None
        else:
            hops = [target.alias, *target.entry.fallbacks]
            version = digest([self._stages, [[alias, _answer_fields(self._models[alias])] for alias in hops]], size=8)
        if len(self._versions) >= _LIMIT:
            self._versions.clear()
        self._versions[model] = version
        return version


def _answer_fields(entry: ModelAlias) -> Any:
    return entry.model_dump(mode="json", exclude={"deployments": {"__all__": _NOT_ANSWER}})
