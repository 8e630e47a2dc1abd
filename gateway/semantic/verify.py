"""The second signal: does a cached query ask the same thing as the new one?

An embedding says two texts are about the same thing; it does not see that "5 mg" is not
"50 mg", that "is it safe" is not "is it not safe", or that `os.path.join` is not
`os.path.split`. A candidate above the similarity threshold is served only if the facts
that decide an answer agree on both sides:

- numbers (digits, written numbers, ordinals, versions, dates) and their units;
- names: capitalised words, acronyms, CamelCase, code identifiers, calendar names;
- quoted strings and code blocks, verbatim;
- negation (how many negating words), and the pole of scales such as advantages/
  disadvantages, before/after, more/less, largest/smallest, import/export, including
  un-/dis-/-less antonyms; a superlative or a comparison on one side only;
- the kind of answer asked for (who / when / where / why / how many ...), and direction
  ("X to Y" is not "Y to X");
- in a short question, one content word swapped for another ("cook rice" / "cook pasta");
- the text beyond what the embedding model reads (it truncates at 256 word pieces).

Every rule can only refuse: the verifier trades recall for precision, never the other way.
It is pure and cheap: 70-150 us a pair parsing both texts, under 10 us once each text's
facts are cached.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from gateway.semantic.facts import Facts, parse_facts, stem


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str | None = None  # what disagrees, e.g. "numbers differ: 5 vs 7"


_PASS = Verdict(True)
# A question of at most this many content words is all topic: each of its words matters.
_FRAME_WORDS = 6


# Candidates recur across lookups; a long prompt's facts can run to ~100 KB, hence the bound.
@lru_cache(maxsize=1024)
def _facts(text: str) -> Facts:
    return parse_facts(text)


def verify(query: str, cached: str) -> Verdict:
    """Whether `cached` may answer `query`; when not, the reason names what disagrees."""
    if query == cached:
        return _PASS
    a, b = _facts(query), _facts(cached)
    for check in _CHECKS:
        verdict = check(a, b)
        if verdict is not None:
            return verdict
    return _PASS


def _show(values: frozenset[str] | set[str]) -> str:
    return ", ".join(sorted(values)) or "none"


def _check_window(a: Facts, b: Facts) -> Verdict | None:
    if a.tail != b.tail:
        return Verdict(False, "text beyond the embedding window differs")
    return None


def _check_code(a: Facts, b: Facts) -> Verdict | None:
    for one, other in ((a, b), (b, a)):
        for block in one.code:
            if block not in other.squashed:
                return Verdict(False, "code blocks differ")
        for quote in one.quotes:
            if f" {quote} " not in other.flat:
                return Verdict(False, f"quoted text differs: {quote!r}")
    return None


def _check_numbers(a: Facts, b: Facts) -> Verdict | None:
    missing_in_b = a.numbers - b.numbers - b.weak_numbers
    missing_in_a = b.numbers - a.numbers - a.weak_numbers
    if missing_in_b or missing_in_a:
        return Verdict(False, f"numbers differ: {_show(a.numbers | a.weak_numbers)} vs {_show(b.numbers | b.weak_numbers)}")
    if a.expressions != b.expressions:
        return Verdict(False, f"expressions differ: {_show(a.expressions)} vs {_show(b.expressions)}")
    if a.units and b.units and a.units != b.units:
        return Verdict(False, f"units differ: {_show(a.units)} vs {_show(b.units)}")
    return None


def _covered(key: str, vocabulary: frozenset[str]) -> bool:
    parts = [p for p in re.split(r"[.\-/:]", key) if p]
    return all(stem(p) in vocabulary for p in parts)


def _check_names(a: Facts, b: Facts) -> Verdict | None:
    for one, other in ((a, b), (b, a)):
        for key in one.keys:
            if _covered(key, other.vocabulary) or key in other.acronyms:
                continue
            # "Machine Learning" on one side, "ML" on the other.
            if any(key in words and acronym in other.vocabulary for acronym, words in one.acronyms.items()):
                continue
            return Verdict(False, f"names differ: {key} not in the other")
    return None


def _check_negation(a: Facts, b: Facts) -> Verdict | None:
    if a.negations != b.negations:
        return Verdict(False, f"negation differs: {a.negations} vs {b.negations} negating words")
    return None


def _check_poles(a: Facts, b: Facts) -> Verdict | None:
    for scale, (plus, minus) in a.poles.items():
        other_plus, other_minus = b.poles.get(scale, (0, 0))
        # A flip moves words from one pole to the other ("before" -> "after"); a pole word merely
        # missing on one side ("small memory" / "limited memory") is a paraphrase's freedom.
        if (plus - other_plus) * (minus - other_minus) < 0:
            return Verdict(False, f"polarity differs on {scale}: {_show(a.pole_words[scale])} vs {_show(b.pole_words[scale])}")
    if a.superlative != b.superlative:
        return Verdict(False, "one asks for an extreme (a superlative), the other does not")
    if a.compares != b.compares:
        return Verdict(False, "one asks for a comparison, the other does not")
    for one, other in ((a, b), (b, a)):
        for base, word in other.negated_bases.items():
            if base in one.words_set and word not in one.words_set:
                return Verdict(False, f"polarity differs: {base} vs {word}")
    return None


def _check_question(a: Facts, b: Facts) -> Verdict | None:
    if (a.wh or b.wh) and not (a.wh & b.wh):
        return Verdict(False, f"question differs: {_show(a.wh)} vs {_show(b.wh)}")
    reversed_pairs = {(y, x) for x, y in a.directions if x != y} & b.directions
    if reversed_pairs:
        x, y = next(iter(reversed_pairs))
        return Verdict(False, f"direction differs: {y} to {x} vs {x} to {y}")
    return None


def _check_frame(a: Facts, b: Facts) -> Verdict | None:
    """Everything shared but one content word each ("cook rice" / "cook pasta"): the swapped
    word is what the question is about."""
    # Numbers have their own check; a written number on one side only ("fourteen days" /
    # "14 days") must not pass for a swapped word.
    a_set = set(a.content) - a.numbers - a.weak_numbers
    b_set = set(b.content) - b.numbers - b.weak_numbers
    if max(len(a_set), len(b_set)) > _FRAME_WORDS:
        return None  # in a long statement one other word is more often a synonym than a new topic
    only_a, only_b = a_set - b_set, b_set - a_set
    if len(only_a) == 1 and len(only_b) == 1 and a_set & b_set:
        return Verdict(False, f"words differ: {only_a.pop()} vs {only_b.pop()}")
    return None


_CHECKS = (
    _check_window,
    _check_code,
    _check_numbers,
    _check_names,
    _check_negation,
    _check_poles,
    _check_question,
    _check_frame,
)
