"""The simulated model: given a validated request, what it answers and what that costs.

Everything here is a pure function of the request except `PromptCache`, which remembers
prompt prefixes the way OpenAI's automatic prompt caching does; it lives on the `SimCore`
object, so each app or provider owns its own. The wire modules (`openai_wire`,
`anthropic_wire`) render a plan into bodies and stream events.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any, Literal

import orjson
import tiktoken

from gateway.sim import anthropic_wire, chat_validate, embeddings, openai_wire, schema, text, tokens, validate
from gateway.sim.limits import check_context
from gateway.sim.plan import Answer, ChatPlan, Choice, CompletionPlan, ToolCall, random_id
from gateway.sim.request import ChatRequest, Tool


def model_key(model: str) -> str:
    """`sim/gpt-4o` and `gpt-4o` are one model: the gateway may or may not strip the prefix."""
    return model.removeprefix("sim/")


def prompt_sequence(enc: tiktoken.Encoding, request: ChatRequest) -> tuple[int, list[int]]:
    """(prompt_tokens, the prompt as one token sequence for prefix caching).

    The count follows OpenAI's published accounting: 3 tokens per message, 1 per name,
    3 to prime the reply, plus the text of every field; tool definitions count as prompt.
    """
    sequence: list[int] = []
    overhead = 3
    if request.tools:
        spec = [
            {"name": t.name, "description": t.description, "parameters": t.parameters} for t in request.tools
        ]
        sequence += tokens.encode(enc, orjson.dumps(spec, option=orjson.OPT_SORT_KEYS).decode())
    for message in request.messages:
        overhead += 3
        sequence += tokens.encode(enc, message.role)
        sequence += tokens.encode(enc, message.text)
        if message.name:
            overhead += 1
            sequence += tokens.encode(enc, message.name)
        for name, arguments in message.tool_calls:
            sequence += tokens.encode(enc, name) + tokens.encode(enc, arguments)
    return len(sequence) + overhead, sequence


def _mentions(text_lower: str, name: str) -> bool:
    lowered = name.lower()
    return lowered in text_lower or lowered.replace("_", " ") in text_lower


def tools_to_call(request: ChatRequest, rng: random.Random) -> list[Tool]:
    """Which functions the model calls: forced, required, or ("auto") the ones the user named."""
    if not request.tools or request.tool_choice == "none":
        return []
    if request.forced_tool is not None:
        return [t for t in request.tools if t.name == request.forced_tool][:1]
    asked = request.last_user_text().lower()
    mentioned = [t for t in request.tools if _mentions(asked, t.name)]
    if request.tool_choice == "auto" and request.answered_tool_since_user():
        # The tool's result is in: a real model now answers in words, which ends an agent loop.
        return []
    if request.tool_choice == "required" and not mentioned:
        mentioned = [rng.choice(request.tools)]
    return mentioned if request.parallel_tool_calls else mentioned[:1]


def apply_stop(answer: str, stops: tuple[str, ...]) -> tuple[str, str | None]:
    cut, matched = len(answer), None
    for stop in stops:
        at = answer.find(stop)
        if 0 <= at < cut:
            cut, matched = at, stop
    return answer[:cut], matched


class SimCore:
    """Plans answers for chat, completions and embeddings requests; owns the prompt cache.

    The body-in, dict-out methods are the OpenAI wire end to end; they raise
    `gateway.errors.InvalidRequest` (status 400, naming the param) for what OpenAI rejects.
    """

    def __init__(self, *, prompt_cache_entries: int = 16384) -> None:
        self.prompt_cache = tokens.PromptCache(prompt_cache_entries)

    def chat_completion(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return openai_wire.chat_completion(self.plan_chat(chat_validate.chat_request(body)))

    def chat_chunks(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        plan = self.plan_chat(chat_validate.chat_request(body))
        return [chunk for chunk, _ in openai_wire.chat_chunks(plan)]

    def text_completion(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return openai_wire.text_completion(self.plan_completion(body))

    def completion_chunks(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [chunk for chunk, _ in openai_wire.completion_chunks(self.plan_completion(body))]

    @staticmethod
    def embeddings(body: Mapping[str, Any]) -> dict[str, Any]:
        return embeddings.embeddings_response(body)

    def openai_answer(
        self, endpoint: str, body: Mapping[str, Any], *, stream_usage: bool | None = None
    ) -> Answer:
        """One OpenAI endpoint ("chat", "completions", "embeddings") rendered for the wire.

        `stream_usage=True` adds the usage chunk even when the client did not ask for it.
        """
        if endpoint == "embeddings":
            return Answer(embeddings.embeddings_response(body), None, 0)
        if endpoint == "completions":
            completion = self.plan_completion(body)
            if completion.stream:
                return Answer(
                    None,
                    openai_wire.completion_stream(completion, with_usage=stream_usage),
                    completion.completion_tokens,
                )
            return Answer(openai_wire.text_completion(completion), None, completion.completion_tokens)
        plan = self.plan_chat(chat_validate.chat_request(body))
        if plan.request.stream:
            return Answer(
                None, openai_wire.chat_stream(plan, with_usage=stream_usage), plan.completion_tokens
            )
        return Answer(openai_wire.chat_completion(plan), None, plan.completion_tokens)

    def anthropic_answer(self, body: Mapping[str, Any]) -> Answer:
        """`POST /v1/messages`; errors are `InvalidRequest` worded as Anthropic words them."""
        request = anthropic_wire.messages_request(body)
        plan = self.plan_chat(
            request, caching="explicit" if anthropic_wire.has_cache_control(body) else "off", wire="anthropic"
        )
        if request.stream:
            return Answer(None, anthropic_wire.stream(plan), plan.completion_tokens)
        return Answer(anthropic_wire.message(plan), None, plan.completion_tokens)

    # -- chat ---------------------------------------------------------------------------
    def plan_chat(
        self,
        request: ChatRequest,
        *,
        caching: Literal["auto", "explicit", "off"] = "auto",
        wire: Literal["openai", "anthropic"] = "openai",
    ) -> ChatPlan:
        """`caching`: "auto" is OpenAI's (reads only), "explicit" Anthropic's with a
        cache_control breakpoint (a miss reports the tokens written), "off" no caching.
        A prompt past the model's context window is refused in `wire`'s words."""
        enc = tokens.encoding_for(request.model)
        prompt_tokens, sequence = prompt_sequence(enc, request)
        check_context(request.model, prompt_tokens, request.max_tokens, wire)
        cached = written = 0
        if caching != "off":
            cached = self.prompt_cache.lookup_and_store(model_key(request.model), sequence)
            if caching == "explicit" and not cached and len(sequence) >= tokens.PromptCache.MIN_TOKENS:
                written = len(sequence) // tokens.PromptCache.INCREMENT * tokens.PromptCache.INCREMENT
        conversation = [(m.role, m.text, m.name, m.tool_calls) for m in request.messages]
        base = text.seed_for(model_key(request.model), conversation, request.seed)
        choices = [
            self._choice(request, enc, index, text.seed_for(base, index)) for index in range(request.n)
        ]
        return ChatPlan(request, enc, choices, prompt_tokens, cached, written)

    def _choice(self, request: ChatRequest, enc: tiktoken.Encoding, index: int, seed: int) -> Choice:
        rng = random.Random(seed)
        calls = tools_to_call(request, rng)
        if calls:
            return self._tool_choice(request, enc, index, rng, calls)
        if request.response_format == "json_schema":
            answer = json.dumps(schema.value_for(request.json_schema or {}, rng), ensure_ascii=False)
        elif request.response_format == "json_object":
            answer = json.dumps(self._json_object(request, rng), ensure_ascii=False)
        else:
            answer = text.prose(rng, text.target_length(rng), text.topic_of(request.last_user_text(), rng))
        answer, matched = apply_stop(answer, request.stop)
        finish = "stop"
        if request.max_tokens is not None and tokens.count(enc, answer) > request.max_tokens:
            answer, matched, finish = tokens.truncate(enc, answer, request.max_tokens), None, "length"
        answer_tokens = tokens.encode(enc, answer)
        logprobs = None
        if request.logprobs:
            logprobs = tokens.token_logprobs(
                enc, answer_tokens, request.top_logprobs, random.Random(seed ^ 0x5A5A)
            )
        return Choice(index, answer, (), finish, len(answer_tokens), rng.getrandbits(32), matched, logprobs)

    @staticmethod
    def _json_object(request: ChatRequest, rng: random.Random) -> dict[str, Any]:
        topic = text.topic_of(request.last_user_text(), rng) or text.phrase(rng, 2)
        return {
            "topic": topic,
            "answer": text.sentence(rng),
            "key_points": [text.sentence(rng) for _ in range(rng.randint(2, 4))],
            "confidence": round(rng.uniform(0.55, 0.98), 2),
        }

    @staticmethod
    def _tool_choice(
        request: ChatRequest, enc: tiktoken.Encoding, index: int, rng: random.Random, calls: list[Tool]
    ) -> Choice:
        made: list[ToolCall] = []
        used = 0
        finish = "tool_calls"
        for tool in calls:
            arguments = orjson.dumps(schema.value_for(tool.parameters or {"type": "object"}, rng)).decode()
            cost = tokens.count(enc, tool.name) + tokens.count(enc, arguments)
            if request.max_tokens is not None and used + cost > request.max_tokens:
                # Cut off mid-arguments, as a real model is: the JSON is incomplete.
                room = max(0, request.max_tokens - used - tokens.count(enc, tool.name))
                arguments = tokens.truncate(enc, arguments, room)
                made.append(ToolCall("call_" + random_id(rng), tool.name, arguments))
                used += tokens.count(enc, tool.name) + tokens.count(enc, arguments)
                finish = "length"
                break
            made.append(ToolCall("call_" + random_id(rng), tool.name, arguments))
            used += cost
        return Choice(index, None, tuple(made), finish, used, rng.getrandbits(32))

    # -- legacy completions -------------------------------------------------------------
    def plan_completion(self, body: Mapping[str, Any]) -> CompletionPlan:
        validate.check_known(body, validate.COMPLETION_PARAMS)
        model = validate.require_model(body)
        enc = tokens.encoding_for(model)
        prompts = validate.prompt_list(body, enc.decode)
        # The legacy endpoint's real default is 16 tokens, which is why its answers end in "length".
        max_tokens = validate.int_param(body, "max_tokens", 1) or 16
        n = validate.int_param(body, "n", 1, 128) or 1
        logprobs = validate.int_param(body, "logprobs", 0, 5)
        seed = validate.int_param(body, "seed", -(2**63))
        stops = validate.stop_param(body)
        echo = validate.bool_param(body, "echo")
        stream, include_usage = validate.stream_params(body)
        choices: list[Choice] = []
        for p, prompt in enumerate(prompts):
            for j in range(n):
                choice_seed = text.seed_for(model_key(model), prompt, seed, j)
                rng = random.Random(choice_seed)
                answer = "\n\n" + text.prose(rng, text.target_length(rng), text.topic_of(prompt, rng))
                answer, matched = apply_stop(answer, stops)
                finish = "stop"
                if tokens.count(enc, answer) > max_tokens:
                    answer, finish = tokens.truncate(enc, answer, max_tokens), "length"
                completion_tokens = tokens.count(enc, answer)
                shown = prompt + answer if echo else answer
                choices.append(
                    Choice(p * n + j, shown, (), finish, completion_tokens, rng.getrandbits(32), matched)
                )
        prompt_tokens = sum(tokens.count(enc, p) for p in prompts)
        return CompletionPlan(model, enc, choices, prompt_tokens, logprobs, stream, include_usage)
