"""Spend: ledger rows added up by team, model, day, stage, ... and rendered as CSV or a table.

Pure functions over rows as the ledger returns them (dicts); nothing here reads the store.
Money stays `Decimal` from the row's decimal string to the output's, so three requests of
$0.1 add up to exactly "0.3". Rows are read tolerantly: a missing field counts as null,
and rows from before a field existed still add up.

Grouping by `stage` answers "what did each stage save", not "what did we spend": one request
can be helped by several stages, so its cost cannot be split among them. A stage group
therefore reports only `requests` (the requests on which that stage recorded a saving) and
`saved_usd` (the sum of those savings); requests no stage acted on appear in no stage group.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

GROUP_KEYS: tuple[str, ...] = ("team", "model", "served_model", "stage", "day", "key", "provider")
METRICS: tuple[str, ...] = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "baseline_usd",
    "saved_usd",
    "unpriced_requests",
    "errors",
)
STAGE_METRICS: tuple[str, ...] = ("requests", "saved_usd")
MONEY: frozenset[str] = frozenset({"cost_usd", "baseline_usd", "saved_usd"})

# The row field behind each group key; `day` and `stage` are derived instead.
_ROW_FIELD = {
    "team": "team",
    "model": "requested_model",
    "served_model": "served_model",
    "key": "key_id",
    "provider": "provider",
}
# Short column titles keep the table within a terminal's width; CSV and JSON use the full names.
_TITLES = {
    "requests": "reqs",
    "prompt_tokens": "prompt tok",
    "completion_tokens": "compl tok",
    "cached_tokens": "cached tok",
    "cost_usd": "cost",
    "baseline_usd": "baseline",
    "saved_usd": "saved",
    "unpriced_requests": "unpriced",
}
_ZERO = Decimal(0)
_MICRO = Decimal("0.000001")

Group = dict[str, Any]
GroupKey = tuple[str | None, ...]


def parse_group_by(names: Sequence[str]) -> tuple[str, ...]:
    """The validated grouping; ValueError names what is wrong with it."""
    cleaned = tuple(name.strip() for name in names)
    if not cleaned or cleaned == ("",):
        raise ValueError(f"expected a comma-separated list of {', '.join(GROUP_KEYS)}")
    for name in cleaned:
        if name not in GROUP_KEYS:
            raise ValueError(f"unknown grouping {name!r}; expected any of {', '.join(GROUP_KEYS)}")
    if len(set(cleaned)) != len(cleaned):
        raise ValueError("a grouping is listed twice")
    return cleaned


def parse_time(text: str, *, is_end: bool = False) -> float:
    """Unix seconds from unix seconds, an ISO date or an ISO datetime (naive means UTC).

    A bare date as the end of a range includes that whole day: `end=2026-11-30` means up to
    the start of December 1st, which is what someone asking for November means.
    """
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"{text!r} is not a time")
        return seconds
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return (midnight + timedelta(days=1) if is_end else midnight).timestamp()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not unix seconds, an ISO date or an ISO datetime") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@dataclass(slots=True)
class _Tally:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = _ZERO
    baseline_usd: Decimal = _ZERO
    saved_usd: Decimal = _ZERO
    unpriced_requests: int = 0
    errors: int = 0

    def add_row(self, row: Mapping[str, Any]) -> None:
        self.requests += 1
        self.prompt_tokens += row.get("prompt_tokens") or 0
        self.completion_tokens += row.get("completion_tokens") or 0
        # Rows written before the field was renamed call it cached_prompt_tokens.
        self.cached_tokens += row.get("cached_tokens") or row.get("cached_prompt_tokens") or 0
        cost = _decimal(row.get("cost_usd"))
        if cost is None:
            self.unpriced_requests += 1
        else:
            self.cost_usd += cost
        self.baseline_usd += _decimal(row.get("baseline_usd")) or _ZERO
        saved = _decimal(row.get("saved_usd"))
        if saved is None:
            # The costing splits saved_usd among the stages, so their sum stands in for it.
            saved = sum((_decimal(v) or _ZERO for v in (row.get("saved_by_stage") or {}).values()), _ZERO)
        self.saved_usd += saved
        if _is_error(row):
            self.errors += 1


class SpendSummary:
    """Rows in, groups out; rows can be added a page at a time, so no caller holds them all."""

    def __init__(
        self,
        *,
        group_by: Sequence[str],
        start: float | None = None,
        end: float | None = None,
        team: str | None = None,
    ) -> None:
        self.group_by = parse_group_by(group_by)
        self._start, self._end, self._team = start, end, team
        self._by_stage = "stage" in self.group_by
        self._seen: set[str] = set()
        self._tallies: dict[GroupKey, _Tally] = {}

    def add(self, row: Mapping[str, Any]) -> None:
        # Dedupe before filtering: the first row written for a request is the one that counts.
        request_id = row.get("request_id")
        if request_id is not None:
            if request_id in self._seen:
                return
            self._seen.add(request_id)
        if not self._selected(row):
            return
        if not self._by_stage:
            self._tally(self._key(row, None)).add_row(row)
            return
        for stage, amount in (row.get("saved_by_stage") or {}).items():
            tally = self._tally(self._key(row, stage))
            tally.requests += 1
            tally.saved_usd += _decimal(amount) or _ZERO

    def groups(self) -> list[Group]:
        metrics = STAGE_METRICS if self._by_stage else METRICS
        out: list[Group] = []
        for key in sorted(self._tallies, key=_sort_key):
            tally = self._tallies[key]
            group: Group = dict(zip(self.group_by, key, strict=True))
            for name in metrics:
                value = getattr(tally, name)
                group[name] = _money(value) if name in MONEY else value
            out.append(group)
        return out

    def _selected(self, row: Mapping[str, Any]) -> bool:
        if self._team is not None and row.get("team") != self._team:
            return False
        if self._start is None and self._end is None:
            return True
        ts = row.get("ts")
        if not isinstance(ts, int | float):
            return False
        return (self._start is None or ts >= self._start) and (self._end is None or ts < self._end)

    def _key(self, row: Mapping[str, Any], stage: str | None) -> GroupKey:
        return tuple(_key_value(row, name, stage) for name in self.group_by)

    def _tally(self, key: GroupKey) -> _Tally:
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally()
        return tally


def summarize(
    rows: Iterable[Mapping[str, Any]],
    *,
    group_by: Sequence[str],
    start: float | None = None,
    end: float | None = None,
    team: str | None = None,
) -> list[Group]:
    """Rows with `start <= ts < end` (and of `team`, if given), grouped and added up."""
    summary = SpendSummary(group_by=group_by, start=start, end=end, team=team)
    for row in rows:
        summary.add(row)
    return summary.groups()


def group_keys(groups: Sequence[Group], group_by: Sequence[str] | None = None) -> tuple[str, ...]:
    """The grouping behind `groups`: given, or read off the first group (keys never share a metric's name)."""
    if group_by is not None:
        return tuple(group_by)
    return tuple(name for name in groups[0] if name not in METRICS) if groups else ()


def metric_names(group_by: Sequence[str]) -> tuple[str, ...]:
    return STAGE_METRICS if "stage" in group_by else METRICS


def totals(groups: Sequence[Group], group_by: Sequence[str] | None = None) -> Group:
    """The groups' metrics added up. Across stage groups, `requests` counts stage actions."""
    total: Group = {}
    for name in metric_names(group_keys(groups, group_by)):
        if name in MONEY:
            total[name] = _money(sum((Decimal(g[name]) for g in groups), _ZERO))
        else:
            total[name] = sum(int(g[name]) for g in groups)
    return total


def to_csv(groups: Sequence[Group], group_by: Sequence[str] | None = None) -> str:
    """One CSV line per group, exact decimal strings, an empty cell for a null key."""
    keys = group_keys(groups, group_by)
    if not keys:
        return ""
    columns = [*keys, *metric_names(keys)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for group in groups:
        writer.writerow(["" if group.get(c) is None else group[c] for c in columns])
    return out.getvalue()


def to_table(groups: Sequence[Group], group_by: Sequence[str] | None = None) -> str:
    """An aligned text table with a total line; money rounded to the micro-dollar for reading."""
    keys = group_keys(groups, group_by)
    if not keys:
        return "no requests\n"
    metrics = metric_names(keys)
    total = totals(groups, keys)
    lines = [[*keys, *(_TITLES.get(name, name) for name in metrics)]]
    for group in groups:
        lines.append(["-" if group.get(k) is None else str(group[k]) for k in keys] + _cells(group, metrics))
    footer = ["total", *([""] * (len(keys) - 1)), *_cells(total, metrics)]
    widths = [max(len(line[i]) for line in [*lines, footer]) for i in range(len(lines[0]))]

    def render(cells: list[str]) -> str:
        left = [cell.ljust(w) for cell, w in zip(cells[: len(keys)], widths[: len(keys)], strict=True)]
        right = [cell.rjust(w) for cell, w in zip(cells[len(keys) :], widths[len(keys) :], strict=True)]
        return "  ".join(left + right).rstrip()

    rule = "-" * sum(widths) + "-" * 2 * (len(widths) - 1)
    return (
        "\n".join([render(lines[0]), rule, *(render(line) for line in lines[1:]), rule, render(footer)])
        + "\n"
    )


def _cells(values: Mapping[str, Any], metrics: Sequence[str]) -> list[str]:
    return [_dollars(Decimal(values[name])) if name in MONEY else f"{values[name]:,}" for name in metrics]


def _dollars(value: Decimal) -> str:
    rounded = value.quantize(_MICRO)
    return f"-${-rounded:,}" if rounded < 0 else f"${rounded:,}"


def _key_value(row: Mapping[str, Any], name: str, stage: str | None) -> str | None:
    if name == "stage":
        return stage
    if name == "day":
        ts = row.get("ts")
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d") if isinstance(ts, int | float) else None
    value = row.get(_ROW_FIELD[name])
    return None if value is None else str(value)


def _sort_key(key: GroupKey) -> tuple[tuple[bool, str], ...]:
    # Null keys (unknown team, unrouted request) sort after the named ones.
    return tuple((value is None, value or "") for value in key)


def _decimal(value: Any) -> Decimal | None:
    # str() first: a float that slipped into a row becomes its shortest repr, not its binary expansion.
    return None if value is None else Decimal(str(value))


def _money(value: Decimal) -> str:
    # Fixed-point: str(Decimal) would write a tiny cost as "1.5E-7".
    return format(value, "f")


def _is_error(row: Mapping[str, Any]) -> bool:
    status = row.get("status")
    return row.get("outcome") == "error" or (isinstance(status, int) and status >= 400)
