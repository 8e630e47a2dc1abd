"""A team's own settings for one stage, read from its policy, laid over the gateway's.

A team's policy carries `stages: {<stage>: {...}}` (docs/policies.md); the stage validates
its entry with its own schema, where every field is optional and an absent one keeps the
gateway's value. The policy was accepted when it was loaded, so an entry that does not
validate must not break the team's traffic: it is logged and the gateway's settings apply.
Resolved settings are kept per team until the team's policy object changes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from policies.loading import describe_validation_error

log = logging.getLogger("tollgate.stages")

S = TypeVar("S")


class TeamOverrides(Generic[S]):
    def __init__(self, stage: str, schema: type[BaseModel], defaults: S, *, logger: logging.Logger = log) -> None:
        if not dataclasses.is_dataclass(defaults):
            raise TypeError("defaults must be a dataclass instance")
        self._log = logger
        self.stage = stage
        self.defaults = defaults
        self._schema = schema
        self._known: dict[str, tuple[Mapping[str, Any], S]] = {}

    def resolve(self, team: str, stage_settings: Mapping[str, Mapping[str, Any]]) -> S:
        raw = stage_settings.get(self.stage)
        if raw is None:
            return self.defaults
        known = self._known.get(team)
        if known is not None and known[0] is raw:
            return known[1]
        try:
            own = self._schema.model_validate(raw)
        except ValidationError as err:
            self._log.warning(
                f"a team's stages.{self.stage} settings are invalid; using the gateway's",
                extra={"team": team, "error": describe_validation_error(err)},
            )
            settings = self.defaults
        else:
            given = {name: value for name, value in own.model_dump().items() if value is not None}
            settings = dataclasses.replace(self.defaults, **given)  # type: ignore[type-var]
        self._known[team] = (raw, settings)
        return settings


class Throttled:
    """A warning logged at most once per interval: a cache whose store is down would
    otherwise log on every request."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0) -> None:
        self._log = logger
        self._every_s = every_s
        self._last = -every_s

    def warn(self, message: str, err: Exception) -> None:
        now = time.monotonic()
        if now - self._last >= self._every_s:
            self._last = now
            self._log.warning(message, extra={"error": str(err)})
