"""What the admin API reports about policies: each team's policy document and where it comes
from, and how much of each budget and rate limit is used right now.

Usage is read, never charged: every limit that applies to a scope is planned with a zero
estimate at `now` (so the counter keys are exactly the ones the policy stage charges) and
its buckets are summed with `store.counters`. Scopes that can be listed are: the team, each
named key and user, each key of the team under `per_key."*"`, and each `per_model` entry.
End users under `per_user."*"` cannot be listed (any user header makes a new one); the
report says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

import orjson

from gateway.stages.policy_source import PolicySource
from gateway.store.base import LeaseLimit, Store
from policies import (
    Estimate,
    Facts,
    Limits,
    Plan,
    Policies,
    PolicyError,
    Scope,
    TeamPolicy,
    format_usd,
    nano_to_usd,
    plan,
    usd_to_nano,
)

# A lease holder no request ever has: reading a lease set must not renew anyone's lease.
_READER = "tollgate-budget-report"
_ZERO = Estimate(cost_nano=0, tokens=0)
_RATE_WINDOWS = {"requests": "per minute", "tokens": "per minute", "concurrent": "in flight"}


# --- documents ---------------------------------------------------------------------------


def document_of(policy: TeamPolicy) -> dict[str, Any]:
    """A loaded team policy as a document: only what was written, amounts as JSON numbers."""
    return dict(_plain(policy.model_dump(mode="python", exclude_unset=True)))


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


async def team_policy_entry(source: PolicySource, store: Store, team: str) -> dict[str, Any] | None:
    """The policy that applies to `team` as the admin API shows it, or None when none does."""
    policies = await source.reload()
    stored = source.overrides.get(team)
    if stored is not None:
        return {"team": team, "source": "api", "policy": dict(stored)}
    written = source.file_teams.get(team)
    if written is not None:
        return {"team": team, "source": "file", "policy": dict(written)}
    if policies.default is not None:
        return {"team": team, "source": "default", "policy": document_of(policies.default)}
    return None


async def list_policies(source: PolicySource, store: Store) -> dict[str, Any]:
    """Every team's policy in force, with where it comes from, and the default."""
    policies = await source.reload()
    stored, written = source.overrides, source.file_teams
    data = []
    for team in sorted(policies.teams):
        if team in stored:
            data.append({"team": team, "source": "api", "policy": dict(stored[team])})
            continue
        document = dict(written[team]) if team in written else document_of(policies.teams[team])
        data.append({"team": team, "source": "file", "policy": document})
    default = (
        None if policies.default is None else {"source": "file", "policy": document_of(policies.default)}
    )
    return {"object": "list", "default": default, "data": data}


def relative_errors(team: str, err: PolicyError) -> tuple[str, str | None]:
    """A validation error of one team's document with paths relative to that document, and
    the first bad path (the `param` of the 400)."""
    prefixes = (f"teams.{team}", f"teams[{orjson.dumps(team).decode()}]")
    lines = []
    for line in str(err).splitlines():
        for prefix in prefixes:
            if line.startswith(prefix):
                line = line[len(prefix) :].lstrip(".").removeprefix(": ")
                break
        lines.append(line)
    path, sep, _ = lines[0].partition(": ") if lines else ("", "", "")
    return "; ".join(lines), (path if sep and " " not in path else None)


# --- usage -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """One budget or rate limit of one scope, and how much of it is used now."""

    policy: str
    scope: str
    kind: str  # usd | requests | tokens | concurrent
    window: str
    action: str
    used: int  # nano-USD for usd
    cap: int
    resets_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        money = self.kind == "usd"
        return {
            "policy": self.policy,
            "scope": self.scope,
            "kind": self.kind,
            "window": self.window,
            "action": self.action,
            "unit": "usd" if money else "requests" if self.kind != "tokens" else "tokens",
            # Money as exact decimal strings (as in the spend report), counts as integers.
            "used": _usd_text(self.used) if money else self.used,
            "limit": _usd_text(self.cap) if money else self.cap,
            "fraction": round(self.used / self.cap, 6) if self.cap else None,
            "resets_at": None if self.resets_at is None else self.resets_at.isoformat(),
        }


@dataclass(slots=True)
class TeamUsage:
    team: str
    source: str
    limits: list[LimitUsage] = field(default_factory=list)
    # Scopes whose limits exist but cannot be listed, and why.
    not_listed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "team": self.team,
            "source": self.source,
            "limits": [limit.to_json() for limit in self.limits],
            "not_listed": self.not_listed,
        }


def _usd_text(nano: int) -> str:
    return f"{nano_to_usd(nano).normalize():f}"


def _pieces(limits: Limits) -> list[Scope]:
    """A scope's limits one at a time, so the report keeps the document's order (a plan puts
    soft actions first). Model rules are left out: they are not limits, and without them a
    plan for any model name lists every limit."""
    pieces = [Scope(budgets=(budget,)) for budget in limits.budgets]
    if limits.rate_limits is not None:
        pieces.append(Scope(rate_limits=limits.rate_limits))
    return pieces


def scope_plans(
    team: str, policy: TeamPolicy, key_ids: Iterable[str], now: datetime
) -> tuple[list[Plan], list[str]]:
    """The plans of every limit of the team that can be listed, and a note per scope that cannot."""

    def planned(model: str = "", key_id: str | None = None, user: str | None = None, **scopes: Any) -> Plan:
        facts = Facts(team=team, model=model, now=now, key_id=key_id, user=user, request_id=_READER)
        return plan(Policies(teams={team: TeamPolicy(**scopes)}), facts, _ZERO)

    plans = [planned(budgets=piece.budgets, rate_limits=piece.rate_limits) for piece in _pieces(policy)]
    notes: list[str] = []
    keys = {key: scope for key, scope in policy.per_key.items() if key != "*"}
    if "*" in policy.per_key:
        keys.update({key: policy.per_key["*"] for key in key_ids if key not in keys})
    for key, scope in keys.items():
        plans += [planned(key_id=key, per_key={key: piece}) for piece in _pieces(scope)]
    for user, scope in policy.per_user.items():
        if user == "*":
            notes.append(
                'per_user."*": every end user has limits of their own; end users cannot be listed, '
                "so their usage is not reported"
            )
        else:
            plans += [planned(user=user, per_user={user: piece}) for piece in _pieces(scope)]
    for pattern, limits in policy.per_model.items():
        if fnmatchcase(pattern, pattern):
            plans += [planned(model=pattern, per_model={pattern: piece}) for piece in _pieces(limits)]
        else:
            notes.append(
                f"per_model.{pattern}: no model name stands for this pattern; its usage is not reported"
            )
    return plans, notes


async def team_usage(
    store: Store, team: str, policy: TeamPolicy, source: str, key_ids: Sequence[str], now: datetime
) -> TeamUsage:
    plans, notes = scope_plans(team, policy, key_ids, now)
    limits = [limit for p in plans for limit in p.limits]
    leases = [lease for p in plans for lease in p.leases]
    keys = sorted({bucket for limit in limits for bucket in limit.buckets})
    values = dict(zip(keys, await store.counters(keys), strict=True))
    in_flight: Sequence[int] = ()
    if leases:
        # The store has no plain read of a lease set; a reservation that cannot be admitted
        # (room for 0) changes nothing and reports how many leases each set holds.
        reading = [LeaseLimit(lease.name, lease.key, _READER, 0, float(lease.ttl_s)) for lease in leases]
        in_flight = (await store.reserve([], reading)).leases
    usage = TeamUsage(team, source, not_listed=notes)
    for limit in limits:
        window = (
            limit.description.removesuffix(" budget") if limit.kind == "usd" else _RATE_WINDOWS[limit.kind]
        )
        used = sum(values.get(bucket, 0) for bucket in limit.buckets)
        usage.limits.append(
            LimitUsage(
                limit.name, limit.scope, limit.kind, window, limit.action, used, limit.cap, limit.resets_at
            )
        )
    for lease, held in zip(leases, in_flight, strict=True):
        usage.limits.append(
            LimitUsage(
                lease.name, lease.scope, "concurrent", "in flight", lease.action, held, lease.cap, None
            )
        )
    return usage


async def budget_report(
    source: PolicySource,
    store: Store,
    *,
    team_ids: Iterable[str],
    key_ids: Mapping[str, Sequence[str]],
    now: datetime,
    team: str | None = None,
) -> dict[str, Any]:
    """`GET /admin/budgets`: per team, every limit that can be listed and its usage at `now`.

    `team_ids` are the teams the gateway knows (they fall under the default policy when they
    have none of their own); `key_ids` their live keys, for `per_key."*"`.
    """
    policies = await source.reload()
    stored = source.overrides
    if team is not None:
        teams = [team]
    else:
        teams = sorted(set(policies.teams) | (set(team_ids) if policies.default is not None else set()))
    data = []
    for name in teams:
        policy = policies.for_team(name)
        source_name = "api" if name in stored else "file" if name in policies.teams else "default"
        if policy is None:
            data.append(TeamUsage(name, "none").to_json())
            continue
        usage = await team_usage(store, name, policy, source_name, key_ids.get(name, ()), now)
        data.append(usage.to_json())
    return {"object": "list", "now": now.isoformat(), "data": data}


# --- the table `tollgate budgets` and the demo print ----------------------------------------

_COLUMNS = ("team", "policy", "window", "spent", "limit", "%", "resets at")
_RIGHT = frozenset({"spent", "limit", "%"})


def budgets_table(report: Mapping[str, Any]) -> str:
    """The budget report as a table: one row per limit, then the scopes that were not listed."""
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for entry in report["data"]:
        team = entry["team"]
        if not entry["limits"]:
            rows.append((team, "(no limits)", "", "", "", "", ""))
        for limit in entry["limits"]:
            money = limit["unit"] == "usd"
            used, cap = limit["used"], limit["limit"]
            spent = format_usd(usd_to_nano(Decimal(used))) if money else f"{used:,}"
            allowed = format_usd(usd_to_nano(Decimal(cap))) if money else f"{cap:,}"
            if not money:
                spent, allowed = f"{spent} {limit['unit']}", f"{allowed} {limit['unit']}"
            fraction = limit["fraction"]
            percent = "" if fraction is None else f"{fraction * 100:.1f}%"
            resets = limit["resets_at"] or ("-" if limit["kind"] == "concurrent" else "never")
            rows.append((team, limit["policy"], limit["window"], spent, allowed, percent, resets))
        notes.extend(f"{team}: {note}" for note in entry["not_listed"])
    widths = [max([len(column), *(len(row[i]) for row in rows)]) for i, column in enumerate(_COLUMNS)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if column in _RIGHT else cell.ljust(width)
            for cell, width, column in zip(cells, widths, _COLUMNS, strict=True)
        ).rstrip()

    out = [line(_COLUMNS), "-" * (sum(widths) + 2 * (len(widths) - 1))] + [line(row) for row in rows]
    if not rows:
        out.append("(no team has a policy)")
    out += [f"note: {note}" for note in notes]
    return "\n".join(out) + "\n"
