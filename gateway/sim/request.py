"""The simulator's own view of a chat request, whichever wire format it arrived in.

OpenAI and Anthropic bodies are both validated into a `ChatRequest`; generation reads
only this, so the two wires give the same answer to the same conversation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ToolChoice = Literal["none", "auto", "required"]


@dataclass(slots=True, frozen=True)
class Message:
    role: str
    text: str
    name: str | None = None
    # (function name, JSON arguments) of an assistant's earlier tool calls: they count as prompt.
    tool_calls: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True, frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    n: int = 1
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    # "text", "json_object" or "json_schema"; `json_schema` holds the schema for the last.
    response_format: str = "text"
    json_schema: Mapping[str, Any] | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = "auto"
    # Set when tool_choice names one function: that function must be called.
    forced_tool: str | None = None
    parallel_tool_calls: bool = True
    stream: bool = False
    include_usage: bool = False

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text
        return ""

    def answered_tool_since_user(self) -> bool:
        """A tool result after the last user turn: the model now answers instead of calling again."""
        for message in reversed(self.messages):
            if message.role == "user":
                return False
            if message.role == "tool":
                return True
        return False
