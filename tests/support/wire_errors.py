"""The error bodies a client reads, in both wire formats, and the events of an SSE answer."""

from __future__ import annotations

from typing import Any

import orjson


def openai_error(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """A whole OpenAI error body; the SDK's `err.body` is its `["error"]`."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def anthropic_error(message: str, type: str = "invalid_request_error") -> dict[str, Any]:
    return {"type": "error", "error": {"type": type, "message": message}}


def sse_events(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name or None, parsed data) for each event of an SSE body; `[DONE]` stays a string."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        # Lines starting with ":" are comments (the gateway's cost figures ride in one): skipped.
        fields = dict(line.split(": ", 1) for line in block.split("\n") if not line.startswith(":"))
        if "data" not in fields:
            continue
        data = fields["data"]
        events.append((fields.get("event"), data if data == "[DONE]" else orjson.loads(data)))
    return events
