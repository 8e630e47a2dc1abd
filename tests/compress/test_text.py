"""Lossless rewrites, protected regions and sentence splitting."""

from __future__ import annotations

import json

from gateway.compress.text import minify_json, normalize_whitespace, regions, sentences


def test_whitespace_runs_collapse_in_prose_only() -> None:
    text = "Total  due:   42 EUR.   \n\n\n\nPaid\u200b on time.\n```\ndef f():\n    return  1   \n```\n"
    assert (
        normalize_whitespace(text)
        == "Total due: 42 EUR.\n\nPaid on time.\n```\ndef f():\n    return  1   \n```\n"
    )


def test_indentation_tables_and_protected_regions_are_kept() -> None:
    text = "  - nested  item\n| a  | b |\nx\ty  z\n<protect>keep    this\n\n\n</protect>"
    assert (
        normalize_whitespace(text)
        == "  - nested item\n| a  | b |\nx\ty  z\n<protect>keep    this\n\n\n</protect>"
    )


def test_an_unclosed_fence_protects_to_the_end() -> None:
    text = "Intro  text.\n```python\nx =   1\n\n\n\ny = 2"
    assert normalize_whitespace(text) == "Intro text.\n```python\nx =   1\n\n\n\ny = 2"


def test_json_is_minified_byte_for_byte_outside_strings() -> None:
    text = '{\n  "price": 1.50,\n  "name": "a  b",\n  "k": 1, "k": 2,\n  "esc": "q\\"  x"\n}'
    minified = minify_json(text)
    assert minified == '{"price":1.50,"name":"a  b","k":1,"k":2,"esc":"q\\"  x"}'
    assert json.loads(minified) == json.loads(text)


def test_text_that_is_not_one_json_document_is_left_alone() -> None:
    assert minify_json('{"a": 1} and more') is None
    assert minify_json("plain words") is None
    assert minify_json('{"a":1}') is None  # nothing to remove


def test_regions_and_sentences_join_back_to_the_text() -> None:
    text = "Dr. Smith arrived in 1999. He left! Why?\n```\ncode. More code.\n```\nThe end. U.S. policy."
    assert "".join(r.text for r in regions(text)) == text
    parts = sentences(text)
    assert "".join(p.text for p in parts) == text
    assert [p.text.strip() for p in parts if not p.protected] == [
        "Dr. Smith arrived in 1999.",
        "He left!",
        "Why?",
        "The end.",
        "U.S. policy.",
    ]
    assert [p.protected for p in parts].count(True) == 1
