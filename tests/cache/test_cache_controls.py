"""Cache-Control and x-tollgate-cache, as the caches read them."""

from __future__ import annotations

import pytest

from gateway.cache.controls import DEFAULT, CacheControls, parse_controls
from gateway.errors import InvalidRequest


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, DEFAULT),
        ({"cache-control": "no-cache"}, CacheControls(read=False, write=True)),
        ({"cache-control": "No-Store"}, CacheControls(read=False, write=False)),
        ({"cache-control": "max-age=60"}, CacheControls(max_age_s=60.0)),
        ({"cache-control": 'max-age="5", no-cache'}, CacheControls(read=False, max_age_s=5.0)),
        ({"cache-control": "max-age=soon"}, DEFAULT),
        ({"cache-control": "only-if-cached"}, CacheControls(only_if_cached=True)),
        ({"cache-control": "private, must-revalidate"}, DEFAULT),
        ({"x-tollgate-cache": "bypass"}, CacheControls(read=False, write=False)),
        ({"x-tollgate-cache": "refresh"}, CacheControls(read=False, write=True)),
        ({"x-tollgate-cache": " Only-If-Cached "}, CacheControls(read=True, write=False, only_if_cached=True)),
        # The gateway's own header decides reading and writing; Cache-Control adds its max-age.
        ({"x-tollgate-cache": "refresh", "cache-control": "no-store"}, CacheControls(read=False, write=True)),
        ({"x-tollgate-cache": "only-if-cached", "cache-control": "no-cache, max-age=9"},
         CacheControls(read=True, write=False, only_if_cached=True, max_age_s=9.0)),
    ],
)  # fmt: skip
def test_parse(headers: dict[str, str], expected: CacheControls) -> None:
    assert parse_controls(headers) == expected


def test_status_says_what_the_cache_did_when_it_did_not_answer() -> None:
    assert parse_controls({}).status == "miss"
    assert parse_controls({"cache-control": "no-cache"}).status == "refresh"
    assert parse_controls({"x-tollgate-cache": "bypass"}).status == "bypass"


def test_max_age_bounds_the_age_of_an_acceptable_entry() -> None:
    controls = parse_controls({"cache-control": "max-age=10"})
    assert controls.fresh_enough(10) and not controls.fresh_enough(10.5)
    assert DEFAULT.fresh_enough(1e9)


def test_an_unknown_mode_is_a_400_that_names_the_header_and_the_allowed_values() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_controls({"x-tollgate-cache": "sometimes"})
    err = caught.value
    assert err.status == 400 and err.param == "x-tollgate-cache"
    assert err.message == (
        "Invalid value for header 'x-tollgate-cache': 'sometimes'. Allowed values: bypass, refresh, only-if-cached."
    )


def test_the_stages_that_ask_for_one_request_share_one_parse() -> None:
    headers = {"cache-control": "max-age=30, no-cache", "x-tollgate-cache": "refresh"}
    assert parse_controls(headers) is parse_controls(dict(headers))
    # A refused value is refused every time, never remembered as an answer.
    for _ in range(2):
        with pytest.raises(InvalidRequest):
            parse_controls({"x-tollgate-cache": "sometimes"})
