"""Text-level pieces of compression: protected regions, lossless rewrites, sentences.

A text is first cut into regions. Fenced code blocks (``` or ~~~, to the end of the text
when left open) and `<protect>...</protect>` regions are protected: no transformation ever
changes a byte inside them, markers included. Everything else is prose, which the lossless
rewrites and the extractive selection may change.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# A fence opens at the start of a line and closes with the same marker at the start of a
# later line; an unclosed fence protects everything after it (a truncated paste is still code).
_PROTECTED = re.compile(r"(?ms)^[ \t]*(```|~~~).*?(?:^[ \t]*\1[^\n]*$|\Z)|<protect>.*?(?:</protect>|\Z)")
# Runs of two or more spaces (or tabs) after the first non-blank character of a line.
_INNER_RUN = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")
_TRAILING = re.compile(r"[ \t]+$", re.M)
_BLANK_LINES = re.compile(r"\n{3,}")
# Characters with no meaning to a model: zero-width spaces and joiners, the byte-order mark.
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
# Decorative rules (`=======`, `-------`, `*******`) longer than markdown needs.
_LONG_RULE = re.compile(r"^([=\-*_~#])\1{3,}[ \t]*$", re.M)
# JSON tokens: a string (escapes included), a run of whitespace, or anything else.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\s+|[^"\s]+', re.S)
# A sentence ends at . ! ? (closing quotes or brackets allowed) before whitespace and a
# capital, digit, quote or bracket; a line break always ends one (lists, headings, tables).
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*[ \t]+(?=[A-Z0-9\"'(\[])|\n+")
# Abbreviations that end in a period without ending the sentence.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e fig no vol inc ltd co corp jan feb mar apr jun jul aug "
    "sep sept oct nov dec u.s u.k a.m p.m approx".split()
)


@dataclass(frozen=True, slots=True)
class Region:
    text: str
    protected: bool


def regions(text: str) -> list[Region]:
    """`text` cut into prose and protected regions, in order; joined they give `text` back."""
    out: list[Region] = []
    position = 0
    for match in _PROTECTED.finditer(text):
        if match.start() > position:
            out.append(Region(text[position : match.start()], False))
        out.append(Region(match.group(0), True))
        position = match.end()
    if position < len(text):
        out.append(Region(text[position:], False))
    return out


def has_protected(text: str) -> bool:
    return _PROTECTED.search(text) is not None


def normalize_whitespace(text: str) -> str:
    """Collapse whitespace and decoration in prose; protected regions stay byte for byte.

    Leading indentation is kept (it carries nesting: lists, outlines, unfenced code), as are
    lines holding a tab or starting with `|` (tables whose columns are aligned by spaces).
    """
    parts = []
    for region in regions(text):
        parts.append(region.text if region.protected else _normalize_prose(region.text))
    return "".join(parts)


def _normalize_prose(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\u00a0", " ")
    text = _INVISIBLE.sub("", text)
    text = _TRAILING.sub("", text)
    lines = []
    for line in text.split("\n"):
        if "\t" in line or line.lstrip().startswith("|"):
            lines.append(line)
        else:
            lines.append(_INNER_RUN.sub(" ", line))
    text = "\n".join(lines)
    text = _LONG_RULE.sub(lambda m: m.group(1) * 3, text)
    return _BLANK_LINES.sub("\n\n", text)


def minify_json(text: str) -> str | None:
    """`text` without the whitespace between JSON tokens when it is one JSON document, else None.

    Only whitespace outside strings is removed, so numbers, key order, duplicate keys and
    escapes stay exactly as written: the document means what it meant, byte for byte.
    """
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        json.loads(stripped)
    except ValueError:
        return None
    minified = "".join(token for token in _JSON_TOKEN.findall(stripped) if not token.isspace())
    return minified if len(minified) < len(text) else None


@dataclass(frozen=True, slots=True)
class Sentence:
    text: str  # the sentence with the whitespace that follows it
    protected: bool


def sentences(text: str) -> list[Sentence]:
    """Whole sentences (and protected regions, whole), in order; joined they give `text` back."""
    out: list[Sentence] = []
    for region in regions(text):
        if region.protected:
            out.append(Sentence(region.text, True))
            continue
        start = 0
        for match in _SENTENCE_END.finditer(region.text):
            if match.group(0).startswith("\n") or not _ends_abbreviation(region.text, match.start()):
                _append(out, region.text[start : match.end()])
                start = match.end()
        if start < len(region.text):
            _append(out, region.text[start:])
    return out


def _append(out: list[Sentence], text: str) -> None:
    # Whitespace alone is no sentence: it stays with what it follows.
    if out and not text.strip():
        out[-1] = Sentence(out[-1].text + text, out[-1].protected)
    else:
        out.append(Sentence(text, False))


def _ends_abbreviation(text: str, end: int) -> bool:
    """The period before `end` closes an abbreviation or an initial ("Dr.", "J. R. R.")."""
    head = text[max(0, end - 12) : end].rstrip("\"')]")
    if not head.endswith("."):
        return False
    word = re.split(r"[\s(\"']", head[:-1])[-1].lower()
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())
