"""What compression may change in a conversation, and what it must leave exactly as sent."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from gateway.accounting.tokens import count_text
from gateway.compress.messages import Options, compress_messages, question_of

COUNT = partial(count_text, "gpt-4o")
LOSSLESS = Options(keep_ratio=None, min_block_tokens=300)
HALF = Options(keep_ratio=0.5, min_block_tokens=100)

FILLER = [
    "The museum opened its new wing to visitors in the spring after years of delays.",
    "Its cafe serves soup and sandwiches from a menu that changes every week.",
    "Parking near the entrance is limited, so most visitors arrive by tram or bus.",
    "The gift shop sells postcards, posters and books about the permanent collection.",
    "Guided tours in several languages leave from the main hall every hour.",
    "School groups are asked to book at least two weeks before their visit.",
]
ANSWER = "The observatory's telescope was built in 1887 by the Zeiss workshop in Jena."
QUESTION = "Who built the observatory's telescope, and when?"


def _document() -> str:
    return " ".join(FILLER[:3] * 3 + [ANSWER] + FILLER[3:] * 3)


def _chat(
    document: str, question: str = QUESTION, system: str = "Be  brief.   Cite  sources."
) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": document},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": question},
    ]


def test_system_prompt_and_last_user_turn_are_never_touched() -> None:
    last = "What   is   this?\n\n\n\nAnswer  briefly."
    messages = _chat("Some   text   here.", question=last)
    out = compress_messages(messages, HALF, COUNT)
    assert out.messages[0] == messages[0]
    assert out.messages[-1] == messages[-1]
    assert out.messages[1]["content"] == "Some text here."
    assert messages[1]["content"] == "Some   text   here."  # the input is not mutated


def test_tool_results_are_minified_and_tokens_counted() -> None:
    result = json.dumps(
        {"orders": [{"id": i, "status": "shipped", "items": [1, 2, 3]} for i in range(20)]}, indent=4
    )
    messages = [
        {"role": "user", "content": "List my orders."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "orders", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": result},
    ]
    out = compress_messages(messages, LOSSLESS, COUNT)
    assert json.loads(out.messages[2]["content"]) == json.loads(result)
    assert out.transforms == ["json"]
    saved = out.saved_by_transform["json"]
    assert saved == COUNT(result) - COUNT(out.messages[2]["content"]) > 100
    assert out.removed[0]["message"] == 2 and out.removed[0]["transform"] == "json"


def test_code_blocks_and_protected_regions_survive_extraction_byte_for_byte() -> None:
    code = "```python\ndef   total(xs):\n    return  sum(xs)\n```"
    protected = "<protect>Refunds   are never paid in cash.</protect>"
    document = f"{_document()}\n{code}\n{_document()}\n{protected}\n{_document()}"
    out = compress_messages(_chat(document), HALF, COUNT)
    kept = out.messages[1]["content"]
    assert code in kept and protected in kept
    assert "extractive" in out.transforms


def test_extraction_keeps_the_answer_and_the_original_order() -> None:
    ordered = [f"{sentence[:-1]}, note {k}." for k, sentence in enumerate(FILLER * 3)]
    ordered.insert(9, ANSWER)
    document = " ".join(ordered)
    out = compress_messages(_chat(document), HALF, COUNT)
    kept = out.messages[1]["content"]
    assert ANSWER in kept
    assert COUNT(kept) <= 0.6 * COUNT(document)
    survivors = [s for s in ordered if s in kept]
    assert 0 < len(survivors) < len(ordered)
    assert [kept.index(s) for s in survivors] == sorted(kept.index(s) for s in survivors)
    record = next(r for r in out.removed if r["transform"] == "extractive")
    assert record["sentences_dropped"] > 0 and record["tokens_after"] < record["tokens_before"]


def test_lossless_level_never_drops_sentences() -> None:
    out = compress_messages(_chat(_document()), LOSSLESS, COUNT)
    assert out.messages[1]["content"] == _document()
    assert out.transforms == [] and out.changed_messages == []


def test_short_blocks_are_not_extracted() -> None:
    out = compress_messages(
        _chat(" ".join([*FILLER, ANSWER])), Options(keep_ratio=0.3, min_block_tokens=300), COUNT
    )
    assert "extractive" not in out.transforms


def test_a_document_inside_the_last_user_turn_is_compressed_and_the_question_is_not() -> None:
    last = f"Read this:\n<document>\n{_document()}\n</document>\n\n{QUESTION}"
    messages = [{"role": "user", "content": last}]
    assert question_of(messages).strip().endswith(QUESTION)
    out = compress_messages(messages, HALF, COUNT)
    text = out.messages[0]["content"]
    assert text.startswith("Read this:\n<document>\n") and text.endswith(f"</document>\n\n{QUESTION}")
    assert ANSWER in text and len(text) < len(last)


def test_earlier_parts_of_a_multi_part_last_turn_are_documents() -> None:
    parts = [{"type": "text", "text": _document()}, {"type": "text", "text": QUESTION}]
    out = compress_messages([{"role": "user", "content": parts}], HALF, COUNT)
    new_parts = out.messages[0]["content"]
    assert new_parts[1] == parts[1] and ANSWER in new_parts[0]["text"] and new_parts[0] != parts[0]


def test_parts_with_cache_control_are_left_alone() -> None:
    part = {"type": "text", "text": "Cached   prefix  text.", "cache_control": {"type": "ephemeral"}}
    messages = [
        {"role": "user", "content": [part]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "q"},
    ]
    assert compress_messages(messages, LOSSLESS, COUNT).messages[0] == messages[0]


def test_a_paragraph_repeated_in_a_later_message_becomes_a_reference() -> None:
    paragraph = " ".join(FILLER)
    messages = [
        {"role": "tool", "tool_call_id": "a", "content": paragraph},
        {"role": "tool", "tool_call_id": "b", "content": f"Header line.\n\n{paragraph}"},
        {"role": "user", "content": QUESTION},
    ]
    out = compress_messages(messages, LOSSLESS, COUNT)
    assert out.messages[0]["content"] == paragraph
    second = out.messages[1]["content"]
    assert second.startswith("Header line.\n\n[repeated: the same text as in message 1 above")
    assert out.transforms == ["dedupe"] and out.saved_by_transform["dedupe"] > 40


def test_each_transformation_can_be_switched_off() -> None:
    messages = _chat("Some   text   here.")
    off = Options(keep_ratio=None, min_block_tokens=300, whitespace=False, minify_json=False, dedupe=False)
    assert compress_messages(messages, off, COUNT).changed_messages == []
