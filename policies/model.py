"""The policy file's typed model: budgets, rate limits, model rules, per key/user/model scopes.

Unknown keys are rejected and every error names its dotted path (policies/loading.py),
so a misspelled `ammount_usd` fails at load time instead of silently allowing spend.
The reference with examples is docs/policies.md.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.money import cap_to_nano
from policies.windows import Period

Action = Literal["block", "downgrade", "defer", "alert_only"]
Window = Literal["calendar", "rolling"]
# Counts are plain integers: `true` or `600.5` in a file is a mistake, not a number.
PositiveInt = Annotated[int, Field(gt=0, strict=True)]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A budget without a name is named after its period.
_DEFAULT_NAMES: dict[str, str] = {
    "hour": "hourly",
    "day": "daily",
    "week": "weekly",
    "month": "monthly",
    "total": "total",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _OnBreach(_Strict):
    """What happens when a request would go past the limit."""

    action: Action = "block"
    # The cheaper alias to re-plan the request on; only with action: downgrade.
    downgrade_to: str | None = None

    @model_validator(mode="after")
    def _downgrade_needs_a_target(self) -> _OnBreach:
        if self.action == "downgrade" and not self.downgrade_to:
            raise ValueError("action downgrade needs downgrade_to (the cheaper model alias)")
        if self.action != "downgrade" and self.downgrade_to is not None:
            raise ValueError("downgrade_to is only used with action: downgrade")
        return self


class Budget(_OnBreach):
    """At most `amount_usd` spent per period."""

    name: str | None = None
    amount_usd: Decimal = Field(gt=0)
    period: Period
    window: Window = "calendar"
    # The wall clock a calendar window follows; a rolling window has no clock.
    timezone: str = "UTC"
    # Fractions of the amount at which to raise an alert, e.g. [0.5, 0.8].
    alert_at: tuple[Decimal, ...] = ()

    @field_validator("amount_usd", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("an amount in USD, e.g. 50 or 12.5")
        return value

    @field_validator("amount_usd")
    @classmethod
    def _at_least_a_nano(cls, value: Decimal) -> Decimal:
        if cap_to_nano(value) < 1:
            raise ValueError("must be at least 0.000000001 (one nano-USD)")
        return value

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError("letters, digits, '_', '.' and '-' only, starting with a letter or digit")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (an IANA name such as Europe/Paris)") from None
        return value

    @field_validator("alert_at")
    @classmethod
    def _fractions(cls, value: tuple[Decimal, ...]) -> tuple[Decimal, ...]:
        for fraction in value:
            if not 0 < fraction <= 1:
                raise ValueError(f"{fraction} is not a fraction of the budget in (0, 1]; write 0.8 for 80%")
        if len(set(value)) != len(value):
            raise ValueError("a threshold is listed twice")
        return tuple(sorted(value))

    @model_validator(mode="after")
    def _window_fits_period(self) -> Budget:
        if self.window == "rolling" and self.period == "total":
            raise ValueError("a total budget never resets, so it has no rolling window")
        if self.window == "rolling" and "timezone" in self.model_fields_set:
            raise ValueError("timezone applies to calendar windows only; a rolling window has no clock")
        return self

    @property
    def label(self) -> str:
        return self.name or _DEFAULT_NAMES[self.period]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def cap_nano(self) -> int:
        return cap_to_nano(self.amount_usd)


class RateLimits(_OnBreach):
    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    # In-flight requests at once, held as leases released when the response ends.
    concurrent: PositiveInt | None = None


class ModelRules(_Strict):
    """Glob patterns (`gpt-4o*`) over the requested model alias; deny wins over allow."""

    # None: every model not denied; []: no model at all.
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()

    def denial(self, model: str) -> str | None:
        """Why `model` is refused by these rules, or None when it is allowed."""
        for pattern in self.deny:
            if fnmatchcase(model, pattern):
                return f"is denied by the pattern {pattern!r}"
        if self.allow is not None and not any(fnmatchcase(model, pattern) for pattern in self.allow):
            allowed = ", ".join(repr(p) for p in self.allow) or "none"
            return f"is not among the allowed models ({allowed})"
        return None


class Limits(_Strict):
    """What one scope may spend and how fast."""

    budgets: tuple[Budget, ...] = ()
    rate_limits: RateLimits | None = None

    @field_validator("budgets")
    @classmethod
    def _unique_names(cls, value: tuple[Budget, ...]) -> tuple[Budget, ...]:
        seen: set[str] = set()
        for budget in value:
            if budget.label in seen:
                raise ValueError(f"two budgets are named {budget.label!r}; give each a distinct name")
            seen.add(budget.label)
        return value

    def downgrade_targets(self) -> list[tuple[str, str]]:
        """(where, alias) for every downgrade_to, `where` relative to this scope."""
        targets = [(f"budgets[{i}]", b.downgrade_to) for i, b in enumerate(self.budgets) if b.downgrade_to]
        if self.rate_limits is not None and self.rate_limits.downgrade_to:
            targets.append(("rate_limits", self.rate_limits.downgrade_to))
        return targets


class Scope(Limits):
    """A key's or an end user's limits, which may also narrow the models it can use."""

    models: ModelRules | None = None


def _subjects_named(value: dict[str, Any], what: str) -> dict[str, Any]:
    if any(not name for name in value):
        raise ValueError(f"a {what} cannot be the empty string; use '*' for every {what} separately")
    return value


class TeamPolicy(Scope):
    # Keyed by virtual key id, or '*' for each key separately.
    per_key: dict[str, Scope] = Field(default_factory=dict)
    # Keyed by end user (the user header), or '*' for each user separately.
    per_user: dict[str, Scope] = Field(default_factory=dict)
    # Keyed by model glob; one entry's counters are shared by every model it matches.
    per_model: dict[str, Limits] = Field(default_factory=dict)
    # Stage name → that stage's settings for this team, validated by the stage itself.
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("per_key")
    @classmethod
    def _keys_named(cls, value: dict[str, Scope]) -> dict[str, Scope]:
        return _subjects_named(value, "key")

    @field_validator("per_user")
    @classmethod
    def _users_named(cls, value: dict[str, Scope]) -> dict[str, Scope]:
        return _subjects_named(value, "user")

    @model_validator(mode="after")
    def _downgrades_stay_allowed(self) -> TeamPolicy:
        # A downgrade onto a model the team may not use would turn every breach into a
        # refusal; say so at load time.
        if self.models is None:
            return self
        scopes: list[tuple[str, Limits]] = [("", self)]
        scopes += [(f"per_key.{k}.", s) for k, s in self.per_key.items()]
        scopes += [(f"per_user.{u}.", s) for u, s in self.per_user.items()]
        scopes += [(f"per_model.{m}.", s) for m, s in self.per_model.items()]
        for prefix, scope in scopes:
            for where, alias in scope.downgrade_targets():
                if (why := self.models.denial(alias)) is not None:
                    raise ValueError(f"{prefix}{where}.downgrade_to: {alias!r} {why} of this team's models")
        return self


class Policies(_Strict):
    # The policy of every team without its own entry (each team counted separately).
    default: TeamPolicy | None = None
    teams: dict[str, TeamPolicy] = Field(default_factory=dict)

    def for_team(self, team: str) -> TeamPolicy | None:
        return self.teams.get(team, self.default)
