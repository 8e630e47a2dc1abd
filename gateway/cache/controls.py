"""What the client asked of the caches: `Cache-Control` and `x-tollgate-cache`.

- `Cache-Control: no-cache`: do not answer from the cache, but store the fresh answer (refresh).
- `Cache-Control: no-store`: neither read nor write.
- `Cache-Control: max-age=N`: accept only an entry stored at most N seconds ago.
- `Cache-Control: only-if-cached`, `x-tollgate-cache: only-if-cached`: answer from the cache
  or fail with 504 `cache_miss`; never call a model.
- `x-tollgate-cache: bypass | refresh`: as `no-store` / `no-cache`.

When `x-tollgate-cache` is given it decides reading and writing on its own; `Cache-Control`
then adds only its `max-age`. Unknown `Cache-Control` directives are ignored, as HTTP caches
ignore them; an unknown `x-tollgate-cache` value is a 400 that names the allowed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from gateway.errors import CacheMiss, header_choice

CACHE_HEADER = "x-tollgate-cache"
# On a hit: how many seconds ago the answer was stored.
AGE_HEADER = "x-tollgate-cache-age"
CACHE_CONTROL = "cache-control"
# The request headers the caches read; the server keeps these, and only these, for stages.
REQUEST_HEADERS = frozenset({CACHE_HEADER, CACHE_CONTROL})
MODES = ("bypass", "refresh", "only-if-cached")

# What the response's `x-tollgate-cache` says when the cache did not answer.
Status = Literal["miss", "refresh", "bypass"]


@dataclass(frozen=True, slots=True)
class CacheControls:
    read: bool = True
    write: bool = True
    only_if_cached: bool = False
    max_age_s: float | None = None

    @property
    def status(self) -> Status:
        if self.read:
            return "miss"
        return "refresh" if self.write else "bypass"

    def fresh_enough(self, age_s: float) -> bool:
        return self.max_age_s is None or age_s <= self.max_age_s


DEFAULT = CacheControls()


def parse_controls(headers: Mapping[str, str]) -> CacheControls:
    """The controls in a request's headers (names in lower case); DEFAULT when none is set.
    Several stages ask for the same request: the parse is remembered by header values."""
    mode = headers.get(CACHE_HEADER)
    directives = headers.get(CACHE_CONTROL)
    if mode is None and directives is None:
        return DEFAULT
    return _parse(mode, directives)


@lru_cache(maxsize=256)
def _parse(mode: str | None, directives: str | None) -> CacheControls:
    read = write = True
    only_if_cached = False
    max_age: float | None = None
    for directive in (directives or "").lower().split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip()
        if name == "no-store":
            read = write = False
        elif name == "no-cache":
            read = False
        elif name == "only-if-cached":
            only_if_cached = True
        elif name == "max-age":
            seconds = value.strip().strip('"')
            if seconds.isdigit():
                max_age = float(seconds)
    if mode is not None:
        chosen = header_choice(CACHE_HEADER, mode, MODES)
        only_if_cached = read = chosen == "only-if-cached"
        write = chosen == "refresh"
    return CacheControls(read=read, write=write, only_if_cached=only_if_cached, max_age_s=max_age)


def cache_miss() -> CacheMiss:
    """What `only-if-cached` gets when no cache answered: raised where a model would be called."""
    return CacheMiss(
        "No cached answer for this request, and the request asked for a cached answer only (only-if-cached).",
        headers={CACHE_HEADER: "miss"},
    )
