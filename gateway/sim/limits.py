"""Context windows of the simulated models, and the error a provider sends past one.

A prompt longer than its model's window is refused as the real APIs refuse it: OpenAI with
a 400 `context_length_exceeded` naming the window and the count, Anthropic with a 400
`invalid_request_error` "prompt is too long". Names outside the table have no window, so
the simulator's arbitrary test model names keep answering anything.
"""

from __future__ import annotations

from typing import Literal

from gateway.errors import InvalidRequest

# Published windows, in tokens (prompt plus completion).
CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-4": 8192,
    "gpt-4-32k": 32768,
    "gpt-3.5-turbo": 16385,
    "gpt-4o": 128000,
    "gpt-4o-mini": 128000,
    "gpt-4.1": 1047576,
    "gpt-4.1-mini": 1047576,
    "gpt-4.1-nano": 1047576,
    "o4-mini": 200000,
    "claude-3-5-haiku-latest": 200000,
    "claude-3-5-sonnet-latest": 200000,
    "claude-sonnet-4-0": 200000,
}


def context_window(model: str) -> int | None:
    return CONTEXT_WINDOWS.get(model.removeprefix("sim/"))


def check_context(
    model: str, prompt_tokens: int, max_tokens: int | None, wire: Literal["openai", "anthropic"]
) -> None:
    """Raise the provider's own error when the prompt (plus the asked-for completion) overflows."""
    window = context_window(model)
    if window is None:
        return
    if wire == "anthropic":
        if prompt_tokens > window:
            raise InvalidRequest(f"prompt is too long: {prompt_tokens} tokens > {window} maximum")
        if max_tokens is not None and prompt_tokens + max_tokens > window:
            raise InvalidRequest(
                f"input length and `max_tokens` exceed context limit: {prompt_tokens} + {max_tokens} > {window}, "
                "decrease input length or `max_tokens` and try again"
            )
        return
    if prompt_tokens > window:
        raise InvalidRequest(
            f"This model's maximum context length is {window} tokens. However, your messages resulted in "
            f"{prompt_tokens} tokens. Please reduce the length of the messages.",
            param="messages",
            code="context_length_exceeded",
        )
    if max_tokens is not None and prompt_tokens + max_tokens > window:
        raise InvalidRequest(
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
            "completion). Please reduce the length of the messages or completion.",
            param="messages",
            code="context_length_exceeded",
        )
