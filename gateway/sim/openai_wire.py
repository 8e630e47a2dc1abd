"""OpenAI's wire format for a plan: `chat.completion`, its chunks, and legacy `text_completion`.

Field order and the always-present nulls (`refusal`, `logprobs`, `usage: null` in each chunk
when usage was asked for) follow what api.openai.com sends, so byte-level code in the
gateway is exercised against realistic bytes.
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any

import orjson

from gateway.sim import tokens
from gateway.sim.plan import ChatPlan, Choice, CompletionPlan, StreamItem, random_id

DONE = StreamItem(b"data: [DONE]\n\n")


def sse(payload: dict[str, Any], tokens_carried: int = 0) -> StreamItem:
    return StreamItem(b"data: " + orjson.dumps(payload) + b"\n\n", tokens_carried)


def usage_dict(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def fingerprint(model: str) -> str:
    return "fp_" + hashlib.blake2b(model.encode(), digest_size=5).hexdigest()


def _message(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.text,
        "refusal": None,
        "annotations": [],
    }
    if choice.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in choice.tool_calls
        ]
    return message


def chat_completion(plan: ChatPlan) -> dict[str, Any]:
    request = plan.request
    return {
        "id": "chatcmpl-" + random_id(length=29),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": c.index,
                "message": _message(c),
                "logprobs": {"content": c.logprobs, "refusal": None} if c.logprobs is not None else None,
                "finish_reason": c.finish_reason,
            }
            for c in plan.choices
        ],
        "usage": usage_dict(plan.prompt_tokens, plan.completion_tokens, plan.cached_tokens),
        "service_tier": "default",
        "system_fingerprint": fingerprint(request.model),
    }


def _choice_deltas(plan: ChatPlan, choice: Choice) -> list[tuple[dict[str, Any], int]]:
    """(choice entry, tokens) for every content or tool-argument delta of one choice."""
    rng = random.Random(choice.split_seed)
    deltas: list[tuple[dict[str, Any], int]] = []
    if choice.text is not None:
        used = 0
        for piece in tokens.split_pieces(plan.encoding, choice.text, rng):
            logprobs = None
            if choice.logprobs is not None:
                logprobs = {"content": choice.logprobs[used : used + len(piece.tokens)], "refusal": None}
            used += len(piece.tokens)
            entry = {
                "index": choice.index,
                "delta": {"content": piece.text},
                "logprobs": logprobs,
                "finish_reason": None,
            }
            deltas.append((entry, len(piece.tokens)))
        return deltas
    for position, call in enumerate(choice.tool_calls):
        if position > 0:  # the first call's header rides on the role chunk, as OpenAI sends it
            header = {
                "index": position,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            deltas.append(
                (
                    {
                        "index": choice.index,
                        "delta": {"tool_calls": [header]},
                        "logprobs": None,
                        "finish_reason": None,
                    },
                    0,
                )
            )
        for piece in tokens.split_pieces(plan.encoding, call.arguments, rng):
            delta = {"tool_calls": [{"index": position, "function": {"arguments": piece.text}}]}
            deltas.append(
                (
                    {"index": choice.index, "delta": delta, "logprobs": None, "finish_reason": None},
                    len(piece.tokens),
                )
            )
    return deltas


def _role_delta(choice: Choice) -> dict[str, Any]:
    if not choice.tool_calls:
        return {"role": "assistant", "content": "", "refusal": None}
    first = choice.tool_calls[0]
    header = {
        "index": 0,
        "id": first.id,
        "type": "function",
        "function": {"name": first.name, "arguments": ""},
    }
    return {"role": "assistant", "content": None, "tool_calls": [header], "refusal": None}


def chat_chunks(plan: ChatPlan, *, with_usage: bool | None = None) -> list[tuple[dict[str, Any], int]]:
    """Every chunk of the stream in order, with the tokens each carries; [DONE] is not a chunk.

    `with_usage` overrides the request's `stream_options.include_usage` (a gateway that
    always asks for usage passes True).
    """
    request = plan.request
    include_usage = request.include_usage if with_usage is None else with_usage
    head: dict[str, Any] = {
        "id": "chatcmpl-" + random_id(length=29),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": request.model,
        "service_tier": "default",
        "system_fingerprint": fingerprint(request.model),
    }

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        body = {**head, "choices": choices}
        if include_usage:
            body["usage"] = None
        return body

    chunks = [
        (chunk([{"index": c.index, "delta": _role_delta(c), "logprobs": None, "finish_reason": None}]), 0)
        for c in plan.choices
    ]
    per_choice = [_choice_deltas(plan, c) for c in plan.choices]
    # Several choices interleave, one delta each in turn, as they do when generated in parallel.
    for step in range(max((len(d) for d in per_choice), default=0)):
        for deltas in per_choice:
            if step < len(deltas):
                entry, carried = deltas[step]
                chunks.append((chunk([entry]), carried))
    for c in plan.choices:
        chunks.append(
            (chunk([{"index": c.index, "delta": {}, "logprobs": None, "finish_reason": c.finish_reason}]), 0)
        )
    if include_usage:
        chunks.append(
            (
                {
                    **head,
                    "choices": [],
                    "usage": usage_dict(plan.prompt_tokens, plan.completion_tokens, plan.cached_tokens),
                },
                0,
            )
        )
    return chunks


def chat_stream(plan: ChatPlan, *, with_usage: bool | None = None) -> list[StreamItem]:
    return [*(sse(c, n) for c, n in chat_chunks(plan, with_usage=with_usage)), DONE]


# -- legacy completions ---------------------------------------------------------------------
def _completion_logprobs(plan: CompletionPlan, choice: Choice) -> dict[str, Any] | None:
    if plan.logprobs is None or choice.text is None:
        return None
    token_ids = tokens.encode(plan.encoding, choice.text)
    entries = tokens.token_logprobs(plan.encoding, token_ids, plan.logprobs, random.Random(choice.split_seed))
    offsets, position = [], 0
    for entry in entries:
        offsets.append(position)
        position += len(str(entry["token"]))
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{str(t["token"]): t["logprob"] for t in e["top_logprobs"]} for e in entries],  # type: ignore[attr-defined]
        "text_offset": offsets,
    }


def text_completion(plan: CompletionPlan) -> dict[str, Any]:
    return {
        "id": "cmpl-" + random_id(length=29),
        "object": "text_completion",
        "created": int(time.time()),
        "model": plan.model,
        "choices": [
            {
                "text": c.text,
                "index": c.index,
                "logprobs": _completion_logprobs(plan, c),
                "finish_reason": c.finish_reason,
            }
            for c in plan.choices
        ],
        "usage": usage_dict(plan.prompt_tokens, plan.completion_tokens),
    }


def completion_chunks(
    plan: CompletionPlan, *, with_usage: bool | None = None
) -> list[tuple[dict[str, Any], int]]:
    include_usage = plan.include_usage if with_usage is None else with_usage
    head = {"id": "cmpl-" + random_id(length=29), "object": "text_completion", "created": int(time.time())}
    chunks: list[tuple[dict[str, Any], int]] = []
    for c in plan.choices:
        for piece in tokens.split_pieces(plan.encoding, c.text or "", random.Random(c.split_seed)):
            entry = {"text": piece.text, "index": c.index, "logprobs": None, "finish_reason": None}
            chunks.append(({**head, "choices": [entry], "model": plan.model}, len(piece.tokens)))
        final = {"text": "", "index": c.index, "logprobs": None, "finish_reason": c.finish_reason}
        chunks.append(({**head, "choices": [final], "model": plan.model}, 0))
    if include_usage:
        usage = usage_dict(plan.prompt_tokens, plan.completion_tokens)
        chunks.append(({**head, "choices": [], "model": plan.model, "usage": usage}, 0))
    return chunks


def completion_stream(plan: CompletionPlan, *, with_usage: bool | None = None) -> list[StreamItem]:
    return [*(sse(c, n) for c, n in completion_chunks(plan, with_usage=with_usage)), DONE]
