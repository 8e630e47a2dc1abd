"""Spend: grouping, time windows in UTC, stage savings, dedupe, unpriced rows and exact money."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from gateway.accounting.spend import (
    METRICS,
    SpendSummary,
    parse_group_by,
    parse_time,
    summarize,
    to_csv,
    to_table,
    totals,
)

NOV_1 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()


def row(request_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "request_id": request_id,
        "ts": NOV_1 + 3600,
        "team": "support",
        "key_id": "key_1",
        "requested_model": "gpt-4o",
        "served_model": "gpt-4o",
        "provider": "openai",
        "status": 200,
        "outcome": "ok",
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "cached_tokens": 0,
        "cost_usd": "0.1",
        "baseline_usd": "0.1",
        "saved_usd": "0",
        "saved_by_stage": {},
    }
    return {**base, **fields}


def by(groups: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(g[k] for k in keys): g for g in groups}


# -- grouping ---------------------------------------------------------------------------------


def test_groups_by_team_and_requested_model_and_adds_everything_up() -> None:
    rows = [
        row("a", prompt_tokens=100, completion_tokens=10, cached_tokens=40),
        row("b", prompt_tokens=50, completion_tokens=5, cached_tokens=0, cost_usd="0.25", baseline_usd="0.5",
            saved_usd="0.25"),
        row("c", team="research"),
        row("d", requested_model="gpt-4o-mini", served_model="gpt-4o-mini"),
    ]  # fmt: skip
    groups = summarize(rows, group_by=["team", "model"])

    assert [(g["team"], g["model"]) for g in groups] == [
        ("research", "gpt-4o"),
        ("support", "gpt-4o"),
        ("support", "gpt-4o-mini"),
    ]
    support = by(groups, "team", "model")[("support", "gpt-4o")]
    assert support == {
        "team": "support",
        "model": "gpt-4o",
        "requests": 2,
        "prompt_tokens": 150,
        "completion_tokens": 15,
        "cached_tokens": 40,
        "cost_usd": "0.35",
        "baseline_usd": "0.6",
        "saved_usd": "0.25",
        "unpriced_requests": 0,
        "errors": 0,
    }


def test_model_is_what_was_requested_and_served_model_what_answered() -> None:
    rows = [row("a", requested_model="gpt-4o", served_model="gpt-4o-mini"), row("b")]
    assert {g["model"]: g["requests"] for g in summarize(rows, group_by=["model"])} == {"gpt-4o": 2}
    served = summarize(rows, group_by=["served_model"])
    assert {g["served_model"]: g["requests"] for g in served} == {"gpt-4o": 1, "gpt-4o-mini": 1}


def test_key_and_provider_groupings() -> None:
    rows = [row("a"), row("b", key_id="key_2", provider="anthropic"), row("c", key_id=None, provider=None)]
    assert [g["key"] for g in summarize(rows, group_by=["key"])] == ["key_1", "key_2", None]
    assert [g["provider"] for g in summarize(rows, group_by=["provider"])] == ["anthropic", "openai", None]


def test_missing_fields_count_as_null_and_rows_from_older_code_still_add_up() -> None:
    old = {"request_id": "old", "ts": NOV_1, "team": "support", "requested_model": "gpt-4o",
           "prompt_tokens": None, "completion_tokens": 7, "cached_prompt_tokens": 3,
           "cost_usd": "0.5", "baseline_usd": "0.5", "saved_usd": "0", "saved_by_stage": {}}  # fmt: skip
    bare = {"request_id": "bare"}
    groups = summarize([old, bare], group_by=["team", "model", "provider"])

    got = {g["team"]: g for g in groups}
    assert (got["support"]["prompt_tokens"], got["support"]["completion_tokens"]) == (0, 7)
    assert got["support"]["cached_tokens"] == 3
    assert got[None] == {
        "team": None, "model": None, "provider": None, "requests": 1, "prompt_tokens": 0,
        "completion_tokens": 0, "cached_tokens": 0, "cost_usd": "0", "baseline_usd": "0", "saved_usd": "0",
        "unpriced_requests": 1, "errors": 0,
    }  # fmt: skip
    # Named groups first, the unknown one last.
    assert [g["team"] for g in groups] == ["support", None]


def test_errors_count_failed_statuses_and_error_outcomes() -> None:
    rows = [
        row("ok"),
        row("upstream", status=502, outcome="error", cost_usd=None, baseline_usd=None, saved_usd=None),
        row("denied", status=429, outcome="short_circuit"),
        row("cut", status=200, outcome="disconnected"),
    ]
    (group,) = summarize(rows, group_by=["team"])
    assert (group["requests"], group["errors"], group["unpriced_requests"]) == (4, 2, 1)


def test_grouping_must_name_known_keys_once() -> None:
    assert parse_group_by(["team", " day"]) == ("team", "day")
    for bad, message in (
        ([""], "comma-separated"),
        (["team", "colour"], "'colour'"),
        (["day", "day"], "twice"),
    ):
        with pytest.raises(ValueError, match=message):
            summarize([row("a")], group_by=bad)


# -- time -------------------------------------------------------------------------------------


def test_days_are_utc_dates_and_the_window_is_start_inclusive_end_exclusive() -> None:
    rows = [
        row("last-second-of-oct", ts=NOV_1 - 1),
        row("midnight", ts=NOV_1),
        row("late", ts=NOV_1 + 86_399.5),
        row("next-day", ts=NOV_1 + 86_400),
    ]
    days = {g["day"]: g["requests"] for g in summarize(rows, group_by=["day"])}
    assert days == {"2026-10-31": 1, "2026-11-01": 2, "2026-11-02": 1}

    window = summarize(rows, group_by=["day"], start=NOV_1, end=NOV_1 + 86_400)
    assert [(g["day"], g["requests"]) for g in window] == [("2026-11-01", 2)]


def test_a_window_leaves_out_rows_without_a_time() -> None:
    rows = [row("timed"), row("untimed", ts=None)]
    assert summarize(rows, group_by=["team"])[0]["requests"] == 2
    assert summarize(rows, group_by=["team"], start=0)[0]["requests"] == 1
    assert [g["day"] for g in summarize(rows, group_by=["day"])] == ["2026-11-01", None]


@pytest.mark.parametrize(
    ("text", "is_end", "expected"),
    [
        ("1793491200", False, NOV_1),
        ("1793491200.5", True, NOV_1 + 0.5),
        ("2026-11-01", False, NOV_1),
        # A bare end date includes its whole day.
        ("2026-11-01", True, NOV_1 + 86_400),
        ("2026-11-01T06:30:00", False, NOV_1 + 6.5 * 3600),
        ("2026-11-01T06:30:00Z", True, NOV_1 + 6.5 * 3600),
        ("2026-11-01T08:30:00+02:00", False, NOV_1 + 6.5 * 3600),
    ],
)
def test_times_parse_as_unix_seconds_iso_dates_or_iso_datetimes(
    text: str, is_end: bool, expected: float
) -> None:
    assert parse_time(text, is_end=is_end) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "nan", "inf", ""])
def test_a_bad_time_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


def test_the_team_filter_keeps_one_team() -> None:
    rows = [row("a"), row("b", team="research"), row("c", team=None)]
    assert [g["team"] for g in summarize(rows, group_by=["team"], team="research")] == ["research"]


# -- stages -----------------------------------------------------------------------------------


def test_stage_grouping_explodes_each_request_into_the_stages_that_saved() -> None:
    rows = [
        row("a", saved_by_stage={"exact_cache": "0.1", "route": "0.05"}),
        row("b", saved_by_stage={"route": "0.2"}),
        row("c", saved_by_stage={}),
        row("d", team="research", saved_by_stage={"route": "0.01"}),
    ]
    groups = summarize(rows, group_by=["stage"])
    assert groups == [
        {"stage": "exact_cache", "requests": 1, "saved_usd": "0.1"},
        {"stage": "route", "requests": 3, "saved_usd": "0.26"},
    ]
    # Across stages, requests counts stage actions (one request helped twice counts twice).
    assert totals(groups) == {"requests": 4, "saved_usd": "0.36"}

    per_team = by(summarize(rows, group_by=["team", "stage"]), "team", "stage")
    assert per_team[("support", "route")]["saved_usd"] == "0.25"
    assert per_team[("research", "route")]["saved_usd"] == "0.01"
    assert set(per_team[("research", "route")]) == {"team", "stage", "requests", "saved_usd"}


def test_a_row_without_saved_usd_is_credited_its_stage_savings() -> None:
    (group,) = summarize(
        [row("a", saved_usd=None, saved_by_stage={"route": "0.2", "defer": "0.1"})], group_by=["team"]
    )
    assert group["saved_usd"] == "0.3"


# -- dedupe and money -------------------------------------------------------------------------


def test_a_request_written_twice_counts_once_and_the_first_row_wins() -> None:
    rows = [row("a", cost_usd="0.1"), row("a", cost_usd="9"), row("b", cost_usd="0.2")]
    (group,) = summarize(rows, group_by=["team"])
    assert (group["requests"], group["cost_usd"]) == (2, "0.3")

    # The first row decides even when the window leaves it out.
    late = [row("x", ts=NOV_1 - 10), row("x", ts=NOV_1 + 10)]
    assert summarize(late, group_by=["team"], start=NOV_1) == []


def test_money_is_exact_decimal() -> None:
    (group,) = summarize(
        [row(str(i), cost_usd="0.1", baseline_usd="0.1") for i in range(3)], group_by=["team"]
    )
    assert group["cost_usd"] == "0.3"  # float would give 0.30000000000000004
    tiny = summarize([row("t", cost_usd="1.5E-7", baseline_usd="0.00000015")], group_by=["team"])[0]
    # Fixed-point, never "1.5E-7".
    assert (tiny["cost_usd"], tiny["baseline_usd"]) == ("0.00000015", "0.00000015")
    many = summarize([row(str(i), cost_usd="0.000000123") for i in range(1000)], group_by=["team"])[0]
    assert Decimal(many["cost_usd"]) == Decimal("0.000123")


def test_unpriced_rows_are_counted_not_read_as_free() -> None:
    rows = [row("a", cost_usd="0.4"), row("b", cost_usd=None, baseline_usd=None, saved_usd=None)]
    (group,) = summarize(rows, group_by=["team"])
    assert (group["requests"], group["unpriced_requests"], group["cost_usd"]) == (2, 1, "0.4")


def test_pages_added_one_at_a_time_give_what_one_pass_gives() -> None:
    rows = [row(str(i), team=f"t{i % 3}", cost_usd=f"0.0{i}") for i in range(9)]
    summary = SpendSummary(group_by=["team"])
    for page in (rows[:4], rows[4:]):
        for r in page:
            summary.add(r)
    assert summary.groups() == summarize(rows, group_by=["team"])


# -- renderers --------------------------------------------------------------------------------


def test_totals_add_every_metric() -> None:
    groups = summarize([row("a"), row("b", team="research", cost_usd=None)], group_by=["team"])
    total = totals(groups)
    assert list(total) == list(METRICS)
    assert (total["requests"], total["cost_usd"], total["unpriced_requests"]) == (2, "0.1", 1)


def test_csv_has_a_header_exact_money_and_empty_cells_for_null_keys() -> None:
    groups = summarize([row("a", cost_usd="0.00000015"), row("b", team=None)], group_by=["team", "model"])
    parsed = list(csv.DictReader(io.StringIO(to_csv(groups))))
    assert list(parsed[0]) == ["team", "model", *METRICS]
    assert [(r["team"], r["cost_usd"], r["requests"]) for r in parsed] == [
        ("support", "0.00000015", "1"),
        ("", "0.1", "1"),
    ]
    assert to_csv([], ["team"]).strip() == ",".join(["team", *METRICS])
    assert to_csv(
        summarize([row("a", saved_by_stage={"route": "0.2"})], group_by=["stage"])
    ).splitlines() == [
        "stage,requests,saved_usd",
        "route,1,0.2",
    ]


def test_table_is_aligned_and_ends_with_a_total_line() -> None:
    rows = [row("a", cost_usd="1234.5", baseline_usd="2000"), row("b", team="research", requested_model=None)]
    lines = to_table(summarize(rows, group_by=["team", "model"])).splitlines()

    header, rule, *body, rule2, total = lines
    assert header.split()[:4] == ["team", "model", "reqs", "prompt"]
    assert set(rule) == {"-"} and rule == rule2
    assert body[0].split()[:2] == ["research", "-"]
    assert body[1].split()[:2] == ["support", "gpt-4o"]
    assert total.split()[:2] == ["total", "2"]
    assert "$1,234.600000" in total and "$2,000.100000" in total
    # Right-aligned figures end in the same column on every line.
    cost_end = header.index("cost") + len("cost")
    assert all(line[:cost_end].endswith(("cost", "0")) for line in [header, *body, total])
    assert to_table([], ["team"]).splitlines()[-1].startswith("total")
