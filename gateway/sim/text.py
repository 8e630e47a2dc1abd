"""Deterministic English-like prose, and the seeds that make every answer repeatable.

An answer is a pure function of a seed derived from (model, prompt, seed, choice index), so
the same request always gets the same words and a different prompt gets different ones;
caches in front of the simulator can therefore be tested for exactly what they store.
"""

from __future__ import annotations

import hashlib
import random
import re

import orjson

_OPENERS = (
    "In practice,", "As a rule,", "Put simply,", "In most cases,", "On balance,", "For example,",
    "At first glance,", "Over time,", "In short,", "By contrast,", "More importantly,", "Even so,",
)  # fmt: skip
_SUBJECTS = (
    "the simplest approach", "a careful design", "the team", "each request", "a small cache",
    "the first draft", "a good default", "the main trade-off", "the system", "a clear plan",
    "the data", "every estimate", "the budget", "a short summary", "the final answer",
    "the model", "a second opinion", "the usual pattern", "this method", "the whole process",
    "a quick test", "the result", "the average reader", "the key idea", "a steady rhythm",
)  # fmt: skip
_VERBS = (
    "keeps", "improves", "reduces", "explains", "reveals", "depends on", "supports", "shapes",
    "balances", "simplifies", "protects", "measures", "changes", "connects", "clarifies",
    "anticipates", "rewards", "limits", "tracks", "highlights", "strengthens", "questions",
)  # fmt: skip
_OBJECTS = (
    "the overall cost", "the underlying problem", "what matters most", "the long-term outcome",
    "a few hidden assumptions", "the pace of progress", "the quality of the work",
    "every later decision", "the shared goal", "the amount of effort", "the risk of mistakes",
    "the final picture", "the next step", "a handful of details", "the original question",
    "the available evidence", "the time it takes", "the way things fit together",
)  # fmt: skip
_TAILS = (
    "without much extra effort", "when the conditions are right", "more than it first appears",
    "in a predictable way", "over the course of a week", "for almost everyone involved",
    "as long as it stays simple", "with very little waste", "in ways that are easy to check",
    "before anything else changes", "once the basics are in place", "at a reasonable price",
)  # fmt: skip
_TOPIC_FRAMES = (
    "When it comes to {t}, ", "Regarding {t}, ", "Thinking about {t}, ", "With {t} in mind, ",
    "As for {t}, ", "The question of {t} is worth a closer look: ",
)  # fmt: skip
_STOPWORDS = frozenset(
    "about above after again against because before being below between could doing during "
    "every from have having here into itself just more most other should some such than that "
    "their them then there these they this those through under until very what when where "
    "which while whom with would your yours please tell explain write give make describe hello there thanks".split()
)
_WORD = re.compile(r"[A-Za-z]{5,}")


def seed_for(*parts: object) -> int:
    """A stable 64-bit seed: Python's own hash() is salted per process, this is not."""
    digest = hashlib.blake2b(orjson.dumps(parts, option=orjson.OPT_NON_STR_KEYS), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def topic_of(text: str, rng: random.Random) -> str | None:
    """A salient word from the user's message, so the answer reads as a reply to it.

    The word keeps the case it was written in ("Paris" stays a name), except the message's
    first word, which is capitalised only because it starts a sentence.
    """
    words: dict[str, str] = {}
    for position, match in enumerate(_WORD.finditer(text)):
        word = match.group()
        if word.lower() not in _STOPWORDS:
            words.setdefault(word.lower(), word.lower() if position == 0 else word)
    if not words:
        return None
    longest = sorted(words, key=lambda w: (-len(w), w))[:4]
    return words[rng.choice(longest)]


def sentence(rng: random.Random) -> str:
    parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
    if rng.random() < 0.6:
        parts.append(rng.choice(_TAILS))
    text = " ".join(parts)
    if rng.random() < 0.35:
        text = f"{rng.choice(_OPENERS)} {text}"
    return text[0].upper() + text[1:] + "."


def prose(rng: random.Random, target_words: int, topic: str | None = None) -> str:
    """Paragraphs of sentences until about `target_words` words have been written."""
    paragraphs: list[str] = []
    current: list[str] = []
    words = 0
    while words < target_words:
        line = sentence(rng)
        if topic is not None and not paragraphs and not current:
            frame = rng.choice(_TOPIC_FRAMES).format(t=topic)
            line = frame + line[0].lower() + line[1:]
        current.append(line)
        words += line.count(" ") + 1
        if len(current) >= rng.randint(3, 5):
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


def phrase(rng: random.Random, words: int = 3) -> str:
    """A short lowercase phrase, for string values that have no better hint."""
    pool = rng.choice(_OBJECTS).removeprefix("the ").removeprefix("a ").split()
    return " ".join(pool[:words])


def target_length(rng: random.Random) -> int:
    """Answer length in words: mostly medium, sometimes short or long (about 30-200 tokens)."""
    return int(rng.triangular(22, 150, 60))
