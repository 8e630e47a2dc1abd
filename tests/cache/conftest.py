"""The store backends the cache runs on: the store suite's own fixtures, reused."""

from __future__ import annotations

from tests.store.conftest import open_backend, store

__all__ = ["open_backend", "store"]
