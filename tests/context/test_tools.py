"""Tool selection: the relevant tools are kept, used and forced ones always, nothing is forced."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from gateway.context.tools import ToolVectors, called_tools, pinned_names, query_text, select, tool_text
from gateway.routing.static_embedding import StaticEmbedder


def tool(name: str, description: str, **params: str) -> dict[str, Any]:
    properties = {p: {"type": "string", "description": d} for p, d in params.items()}
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties},
        },
    }


TOOLS = [
    tool("get_weather", "Current weather and forecast for a city", city="the city"),
    tool("send_email", "Send an email message to a recipient", to="address", body="text"),
    tool("convert_currency", "Convert an amount of money between currencies", amount="amount"),
    tool("book_flight", "Book a flight ticket between two airports", origin="from", destination="to"),
    tool("translate_text", "Translate text into another language", text="text", language="target"),
    tool("stock_price", "Latest stock market price of a company ticker", ticker="symbol"),
    tool("play_music", "Play a song or playlist on the speaker", song="title"),
    tool("set_alarm", "Set an alarm clock for a given time", time="when"),
]


@pytest.fixture(scope="module")
def vectors() -> ToolVectors:
    return ToolVectors(StaticEmbedder())


def body(question: str, **extra: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}],
        "tools": TOOLS,
        **extra,
    }


def kept_names(selection: Any) -> set[str]:
    return {TOOLS[i]["function"]["name"] for i in selection.kept}


def test_the_relevant_tool_is_kept_and_most_are_removed(vectors: ToolVectors) -> None:
    selection = select(vectors, body("What's the weather going to be like in Lisbon tomorrow?"), top_k=2)
    assert selection is not None
    assert "get_weather" in kept_names(selection)
    assert len(selection.kept) == 2
    assert len(selection.removed) == 6
    assert list(selection.kept) == sorted(selection.kept)  # the client's order


def test_tools_already_called_are_kept_whatever_their_score(vectors: ToolVectors) -> None:
    messages = [
        {"role": "user", "content": "Play something relaxing"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "play_music", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "playing"},
        {"role": "assistant", "content": "Playing now."},
        {"role": "user", "content": "What will the weather be like in Oslo this weekend?"},
    ]
    selection = select(vectors, {"messages": messages, "tools": TOOLS}, top_k=1)
    assert selection is not None
    assert {"play_music", "get_weather"} <= kept_names(selection)
    assert selection.pinned == ("play_music",)


def test_the_forced_tool_is_kept(vectors: ToolVectors) -> None:
    forced = {"type": "function", "function": {"name": "set_alarm"}}
    selection = select(vectors, body("What's the weather in Oslo?", tool_choice=forced), top_k=1)
    assert selection is not None
    assert "set_alarm" in kept_names(selection)


def test_a_question_no_tool_fits_forces_no_tool(vectors: ToolVectors) -> None:
    request = body("Write a haiku about the sea.", tool_choice="auto")
    selection = select(vectors, request, top_k=3)
    assert selection is not None
    assert len(selection.kept) == 3  # never more than top_k, never a tool_choice changed
    assert request["tool_choice"] == "auto"
    assert pinned_names(request) == set()


def test_definitions_are_embedded_once_by_hash() -> None:
    class Counting:
        dim = 4

        def __init__(self) -> None:
            self.calls: list[int] = []

        def embed(self, texts: Sequence[str]) -> np.ndarray:
            self.calls.append(len(texts))
            return np.ones((len(texts), 4), dtype=np.float32) / 2

    embedder = Counting()
    vectors = ToolVectors(embedder)
    vectors.of(TOOLS)
    vectors.of([*TOOLS, TOOLS[0]])
    changed = tool("get_weather", "Weather, now with humidity", city="the city")
    vectors.of([changed])
    assert embedder.calls == [8, 1]  # a repeat is free, an edited definition is new
    assert len(vectors) == 9


def test_a_short_follow_up_borrows_the_previous_turn() -> None:
    messages = [
        {"role": "user", "content": "Convert 100 dollars to euros"},
        {"role": "assistant", "content": "92 EUR"},
        {"role": "user", "content": "and yen?"},
    ]
    assert query_text(messages) == "Convert 100 dollars to euros\nand yen?"


def test_tools_that_are_not_functions_are_left_alone(vectors: ToolVectors) -> None:
    assert (
        select(
            vectors,
            {"messages": [{"role": "user", "content": "hi there"}], "tools": [{"type": "web_search"}]},
            top_k=1,
        )
        is None
    )


def test_tool_text_reads_names_as_words() -> None:
    assert tool_text(tool("getWeather_byCity", "Weather.", cityName="x")).startswith(
        "get Weather by City. Weather."
    )


def test_called_tools_reads_the_answer() -> None:
    answer = {
        "choices": [
            {
                "message": {
                    "tool_calls": [
                        {"function": {"name": "a", "arguments": "{}"}},
                        {"function": {"name": "b"}},
                    ]
                }
            }
        ]
    }
    assert called_tools(answer) == {"a", "b"}
