"""Cursor-paged list endpoints: the `limit` query parameter and OpenAI's list object.

The gateway's Files and Batch APIs and the simulated provider's list their objects in pages
of `limit`, after the id of the last one seen; OpenAI's answer is a list object that names
the page's first and last ids and whether more follow.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest


def page_limit(raw: str | None, default: int, maximum: int) -> int:
    """The `limit` query parameter: `default` when absent, a 400 unless from 1 to `maximum`."""
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise InvalidRequest(
            f"Invalid 'limit': expected an integer between 1 and {maximum}, got {raw!r}.",
            param="limit",
            code="invalid_value",
        )
    return limit


def openai_list(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's list object for one page of objects (each with an `id`)."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
