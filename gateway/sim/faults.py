"""Per-request controls: faults to inject and timing to imitate.

A request chooses them with `x-sim-*` headers or with `[[sim:key=value]]` markers anywhere
in its prompt text (a marker survives any gateway or SDK in between, a header may not);
otherwise the configured defaults apply, and `fault_rate` injects faults at random from a
seeded generator so a chaos run is repeatable.

Headers: x-sim-fault, x-sim-retry-after, x-sim-latency-ms, x-sim-ttft-ms, x-sim-tokens-per-s.
Markers: fault, retry_after, latency_ms, ttft_ms, tokens_per_s.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.config import SimConfig
from gateway.errors import InvalidRequest

FAULT_KINDS = ("429", "500", "503", "400", "timeout", "reset", "malformed")
# Faults that are an HTTP error answer, as opposed to misbehaving connections.
ERROR_FAULTS = frozenset({"429", "500", "503", "400"})
# What `fault_rate` injects when no `fault` kind is configured: the transient, retryable ones.
_RANDOM_FAULTS = ("429", "500", "503")
_MARKER = re.compile(r"\[\[sim:([A-Za-z_]+)=([^\]\s]*)\]\]")
# marker key -> header name
_KEYS = {
    "fault": "x-sim-fault",
    "retry_after": "x-sim-retry-after",
    "latency_ms": "x-sim-latency-ms",
    "ttft_ms": "x-sim-ttft-ms",
    "tokens_per_s": "x-sim-tokens-per-s",
}
Wire = Literal["openai", "anthropic"]


@dataclass(slots=True, frozen=True)
class Controls:
    fault: str | None = None
    retry_after_s: float = 1.0
    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0


@dataclass(slots=True, frozen=True)
class FaultAnswer:
    """An error answer in a provider's real shape."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _texts(item)


def find_markers(body: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key in ("messages", "system", "prompt", "input"):
        for piece in _texts(body.get(key)):
            if "[[sim:" not in piece:
                continue
            for name, value in _MARKER.findall(piece):
                if name not in _KEYS:
                    raise InvalidRequest(
                        f"unknown simulator marker [[sim:{name}=...]]; known: {', '.join(_KEYS)}"
                    )
                found[name] = value
    return found


def _number(raw: str, source: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"{source}: expected a number, got {raw!r}") from None
    if value < 0:
        raise InvalidRequest(f"{source}: must be >= 0, got {raw!r}")
    return value


def check_fault(kind: str, source: str) -> str:
    if kind not in FAULT_KINDS:
        raise InvalidRequest(
            f"{source}: unknown simulator fault {kind!r}; expected one of {', '.join(FAULT_KINDS)}"
        )
    return kind


class FaultInjector:
    """Decides each request's `Controls`; owns the seeded generator behind `fault_rate`."""

    def __init__(self, settings: SimConfig, *, seed: int = 0) -> None:
        if settings.fault is not None and settings.fault not in FAULT_KINDS:
            raise ValueError(
                f"sim.fault: unknown fault {settings.fault!r}; expected one of {', '.join(FAULT_KINDS)}"
            )
        self.settings = settings
        self._rng = random.Random(seed)

    def controls(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> Controls:
        lowered = {k.lower(): v for k, v in headers.items() if k[:6].lower() == "x-sim-"}
        markers = find_markers(body)

        def pick(key: str) -> tuple[str, str] | None:
            header = _KEYS[key]
            if header in lowered:
                return lowered[header], header
            if key in markers:
                return markers[key], f"[[sim:{key}=...]]"
            return None

        settings = self.settings
        fault = self._configured_fault()
        chosen = pick("fault")
        if chosen is not None:
            fault = check_fault(chosen[0], chosen[1]) if chosen[0] not in ("", "none") else None
        values = {
            "retry_after": 1.0,
            "latency_ms": settings.latency_ms,
            "ttft_ms": settings.ttft_ms,
            "tokens_per_s": settings.tokens_per_s,
        }
        for key in values:
            chosen = pick(key)
            if chosen is not None:
                values[key] = _number(*chosen)
        return Controls(
            fault, values["retry_after"], values["latency_ms"], values["ttft_ms"], values["tokens_per_s"]
        )

    def _configured_fault(self) -> str | None:
        rate = self.settings.fault_rate
        if rate <= 0 or self._rng.random() >= rate:
            return None
        return self.settings.fault or self._rng.choice(_RANDOM_FAULTS)


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def error_answer(kind: str, wire: Wire, model: str, retry_after_s: float = 1.0) -> FaultAnswer:
    """The body, status and headers the real provider sends for this kind of failure."""
    if wire == "anthropic":
        return _anthropic_error(kind, retry_after_s)
    if kind == "429":
        wait = _seconds(retry_after_s)
        message = (
            f"Rate limit reached for {model} in organization org-simulated on requests per min (RPM): "
            f"Limit 500, Used 500, Requested 1. Please try again in {wait}s. "
            "Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        headers = {
            "retry-after": wait,
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{wait}s",
        }
        return FaultAnswer(429, _openai_body(message, "requests", "rate_limit_exceeded"), headers)
    if kind == "500":
        message = "The server had an error while processing your request. Sorry about that!"
        return FaultAnswer(500, _openai_body(message, "server_error"), {})
    if kind == "503":
        return FaultAnswer(
            503, _openai_body("The server is overloaded or not ready yet.", "server_error"), {}
        )
    message = "Invalid request: rejected by the simulator's injected 400 fault."
    return FaultAnswer(400, _openai_body(message, "invalid_request_error"), {})


def _openai_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _anthropic_error(kind: str, retry_after_s: float) -> FaultAnswer:
    headers: dict[str, str] = {}
    if kind == "429":
        status, error_type = 429, "rate_limit_error"
        message = (
            "This request would exceed the rate limit for your organization of 50 requests per minute. "
            "For details, refer to: https://docs.claude.com/en/api/rate-limits."
        )
        headers = {
            "retry-after": _seconds(retry_after_s),
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
        }
    elif kind == "500":
        status, error_type, message = 500, "api_error", "Internal server error"
    elif kind == "503":
        status, error_type, message = 503, "overloaded_error", "Overloaded"
    else:
        status, error_type = 400, "invalid_request_error"
        message = "Invalid request: rejected by the simulator's injected 400 fault."
    return FaultAnswer(status, {"type": "error", "error": {"type": error_type, "message": message}}, headers)


# A response cut off mid-JSON, as a broken proxy or a truncated read delivers it.
MALFORMED_BODY = {
    "openai": b'{"id":"chatcmpl-simulated","object":"chat.completion","choices":[{"index":0,"message":{"role":"assist',
    "anthropic": b'{"id":"msg_simulated","type":"message","role":"assistant","content":[{"type":"te',
}
MALFORMED_EVENT = {
    "openai": b'data: {"id":"chatcmpl-simulated","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"cont\n\n',
    "anthropic": b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_del\n\n',
}
