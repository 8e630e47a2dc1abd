"""The simulator as an in-process provider (`provider: sim`): same answers, no socket.

Faults surface exactly as a network provider's would after translation at its boundary:
error statuses become the gateway's `Upstream*` errors, a request that never answers is
cut off by the deployment's `timeout_s`, and a stream that breaks raises from its iterator
after the events already delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from gateway.config import Deployment, SimConfig
from gateway.errors import (
    InvalidRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.providers.base import ProviderCall, ProviderResponse, SSEStream
from gateway.sim.core import SimCore
from gateway.sim.faults import ERROR_FAULTS, Controls, FaultInjector, error_answer
from gateway.sim.pacing import Pacer, fault_index, generation_s
from gateway.sim.plan import StreamItem


def _upstream_error(
    kind: str, where: str, model: str, retry_after_s: float
) -> UpstreamError | UpstreamRateLimited:
    """The gateway error a real provider module raises for this HTTP status, with the provider's message."""
    answer = error_answer(kind, "openai", model, retry_after_s)
    message = f"{where}: {answer.body['error']['message']}"
    if kind == "429":
        return UpstreamRateLimited(message, retry_after_s=retry_after_s)
    if kind == "503":
        return UpstreamUnavailable(message, upstream_status=503)
    if kind == "400":
        return UpstreamRejected(message, upstream_status=400, error_type=answer.body["error"]["type"])
    return UpstreamError(message, upstream_status=answer.status)


class SimProvider:
    """Provider protocol over `SimCore`; owns its prompt cache and fault generator."""

    kind = "sim"

    def __init__(self, settings: SimConfig | None = None, *, fault_seed: int = 0) -> None:
        self.settings = settings or SimConfig()
        self.core = SimCore()
        self.faults = FaultInjector(self.settings, seed=fault_seed)

    async def send(self, call: ProviderCall, deployment: Deployment) -> ProviderResponse:
        body = self._body(call, deployment)
        model = str(body.get("model"))
        where = model if model.startswith("sim/") else f"sim/{model}"
        timeout_s = deployment.timeout_s
        try:
            controls = self.faults.controls(body, call.headers)
        except InvalidRequest as err:
            raise UpstreamRejected(f"{where}: {err.message}", upstream_status=400) from None
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.sleep(controls.latency_ms / 1000)
                if controls.fault == "timeout":
                    await asyncio.Event().wait()  # never set: only the deadline ends this
        except TimeoutError:
            raise UpstreamTimeout(f"{where}: no response within {timeout_s:g}s") from None
        fault = controls.fault
        if fault in ERROR_FAULTS:
            raise _upstream_error(fault, where, model, controls.retry_after_s)
        if fault == "reset" and not call.stream:
            # As the network path reports a socket closed before any response: the server is not serving.
            raise UpstreamUnavailable(f"{where}: server disconnected before sending a response")
        try:
            answer = self.core.openai_answer(call.endpoint, body, stream_usage=True if call.stream else None)
        except InvalidRequest as err:
            raise UpstreamRejected(
                f"{where}: {err.message}",
                upstream_status=400,
                error_type=err.type,
                param=err.param,
                code=err.code,
            ) from None
        if answer.events is None:
            if fault == "malformed":
                raise UpstreamError(f"{where}: upstream answered with malformed JSON")
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.sleep(generation_s(controls, answer.completion_tokens))
            except TimeoutError:
                raise UpstreamTimeout(f"{where}: no response within {timeout_s:g}s") from None
            assert answer.body is not None
            return ProviderResponse.from_json(answer.body)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = _events(answer.events, controls, where, timeout_s)
        return ProviderResponse(stream=SSEStream(events, include_usage=include_usage))

    @staticmethod
    def _body(call: ProviderCall, deployment: Deployment) -> Mapping[str, Any]:
        if not deployment.extra_body and bool(call.body.get("stream")) == call.stream:
            return call.body
        body: dict[str, Any] = {**call.body, **deployment.extra_body}
        if call.stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return body

    async def aclose(self) -> None:
        return None


async def _events(
    items: list[StreamItem], controls: Controls, where: str, timeout_s: float
) -> AsyncIterator[bytes]:
    pacer = Pacer(controls)
    broken = controls.fault in ("reset", "malformed")
    strike = fault_index(items) if broken else -1
    paced = bool(controls.ttft_ms or controls.tokens_per_s)
    for index, item in enumerate(items):
        if index == strike:
            if controls.fault == "reset":
                raise UpstreamError(f"{where}: stream interrupted: connection reset by peer")
            raise UpstreamError(f"{where}: upstream sent a malformed stream event")
        if paced and item.tokens:
            try:
                async with asyncio.timeout(timeout_s):  # a network provider's read timeout
                    await pacer.wait(item)
            except TimeoutError:
                raise UpstreamTimeout(f"{where}: stream stalled for {timeout_s:g}s") from None
        yield item.data
