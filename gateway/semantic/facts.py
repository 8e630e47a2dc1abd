"""What one text states that decides its answer: numbers, names, quotes, polarity, question kind.

`parse_facts` reads a text once into `Facts`; the verifier compares two of them. Pure
functions over regular expressions and the word lists in `lexicon`, no model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from gateway.semantic.lexicon import (
    ABBREVIATIONS,
    AMBIGUOUS_CALENDAR,
    ASKED_BY_NOUN,
    CALENDAR,
    COMMON_CAPITALISED,
    COMPARISON_WORDS,
    HOW_QUANTITY,
    NEGATIONS,
    NUMBER_WORDS,
    ORDINALS,
    POLES,
    SCALES,
    STOPWORDS,
    SUPERLATIVES,
    SYNONYMS,
    UNITS,
    VAGUE_SCALES,
    WEAK_NUMBER_WORDS,
    WH_WORDS,
)

# The embedding model reads 256 word pieces; English prose averages 1.3-1.5 pieces a word,
# code and rare names more. Past this many words, text the embedding may not have seen must
# be identical on both sides.
WINDOW_WORDS = 128

_TOKEN = re.compile(
    r"\d{1,3}(?:,\d{3})+(?:\.\d+)?%?"  # 1,000,000.5
    r"|[$€£¥]?[\w°]+(?:['\u2019.\-/:]\w+)*(?:\(\))?%?"  # words, 3.11, GPT-4, os.path.join(), it's, 50%
    r"|->|→|[^\w\s]"
)
_SPACED_TOKEN = re.compile(r"(\s*)(" + _TOKEN.pattern + ")")
_NUMBER = re.compile(r"(\d[\d,]*(?:[.:]\d+)*)(st|nd|rd|th)?([a-z°%]*)")
_DIGITS = re.compile(r"\d+(?:[.:]\d+)*")
_EXPRESSION = re.compile(r"\d+(?:\.\d+)?(?:\s*[-+*/\u00d7÷^=<>]\s*\d+(?:\.\d+)?)+")
_FENCED = re.compile(r"```(.*?)```", re.S)
_QUOTED = re.compile(r"`([^`\n]+)`|[\"“]([^\"”\n]{1,200})[\"”]|(?<!\w)'([^'\n]{1,200})'(?!\w)")
_QUOTE_MARKS = ("`", '"', "\u201c", "'")
# After these a capital starts a sentence, not a name. Not ":": "sections: Audio, Vision" lists names.
_SENTENCE_BREAK = frozenset(".?!;\"“”'(*•#>|[")
_DIRECTION_WORDS = frozenset({"to", "into", "->", "→"})
_PARTS = re.compile(r"[.\-/:'\u2019]")
_IDENTIFIER_DOT = re.compile(r"[a-z]\.[a-z]")
_CAMEL = re.compile(r"[a-z][A-Z]")
_HUMPS = re.compile(r"[A-Z][a-z]+")


@dataclass(frozen=True, slots=True)
class Facts:
    flat: str  # lower-case words joined by single spaces, padded with a space each side
    words_set: frozenset[str]
    negated_bases: dict[str, str]  # base word -> the word that negates it ("safe" -> "unsafe")
    vocabulary: frozenset[str]  # stems of every word and of every part of a compound word
    content: tuple[str, ...]  # topic-bearing words, in order (stems; synonyms share one form)
    numbers: frozenset[str]
    weak_numbers: frozenset[str]  # "one", "first": may answer a number, never demand one
    units: frozenset[str]
    expressions: frozenset[str]
    keys: frozenset[str]  # names, acronyms, identifiers, calendar names
    acronyms: dict[str, frozenset[str]]  # "ml" -> {"machine", "learning"}; "js" -> {"javascript"}
    quotes: frozenset[str]
    code: frozenset[str]
    squashed: str  # the text with runs of whitespace made one space
    negations: int
    poles: dict[str, tuple[int, int]]  # scale -> (words at its + pole, words at its - pole)
    pole_words: dict[str, frozenset[str]]
    superlative: bool  # "largest", "best", "most ...": asks for one extreme
    compares: bool  # "than", "compare", "versus", "difference": asks how two things relate
    wh: frozenset[str]
    directions: frozenset[tuple[str, str]]
    tail: str


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A crude, consistent stem: plural, -ing, -ed and a final e go; enough to match word forms."""
    word = word.lower().replace("\u2019", "'")
    if word.endswith("'s"):
        word = word[:-2]
    word = word.rstrip("'")
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
                word = word[:-1]
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


def _number(text: str) -> str:
    """One spelling per value: no thousands commas, no leading zeros; decimals kept as written
    (3.10 and 3.1 are different versions)."""
    text = text.replace(",", "")
    head, sep, rest = text.partition(".")
    if ":" not in head and head.isdigit():
        head = str(int(head))
    return head + sep + rest


def _written(run: list[str]) -> str:
    """The value of a run of number words; ordinals ("twenty-first") are marked with #."""
    total, current = 0, 0
    for word in run:
        if word in SCALES:
            current = max(current, 1) * SCALES[word]
            if SCALES[word] >= 1000:
                total, current = total + current, 0
        else:
            current += NUMBER_WORDS.get(word, ORDINALS.get(word, 0))
    return ("#" if run[-1] in ORDINALS else "") + str(total + current)


def _normal_quote(text: str) -> str:
    return " ".join(m.group(0).lower() for m in _TOKEN.finditer(text) if m.group(0)[0].isalnum())


def _is_number_word(bare: str) -> bool:
    parts = bare.split("-")
    return all(p in NUMBER_WORDS or p in SCALES or p in ORDINALS for p in parts)


@dataclass(frozen=True, slots=True)
class _Word:
    """What a lower-case word is, whatever its context; computed once per distinct word."""

    vocabulary: tuple[str, ...]
    number_word: bool
    content: str | None  # its stem, or None for a word that carries no topic
    negation: bool
    pole: tuple[str, str] | None
    calendar: str | None
    unit: str | None
    negated_base: str | None  # "unsafe" -> "safe", "useless" -> "useful"


_NEGATION_PREFIXES = ("non-", "anti-", "dis", "non", "un", "in", "im", "il", "ir")


def _content(bare: str) -> str:
    """The topic a word carries: synonyms and words at the same pole of a scale share one."""
    if bare in SYNONYMS:
        return SYNONYMS[bare]
    pole = POLES.get(bare)
    return f"{pole[0]}{pole[1]}" if pole else stem(bare)


@lru_cache(maxsize=65536)
def _word(bare: str) -> _Word:
    parts = [p for p in _PARTS.split(bare) if p]
    vocabulary = {stem(bare), *(stem(p) for p in parts)}
    vocabulary.update(stem(CALENDAR[p]) for p in parts if p in CALENDAR)
    negated_base = None
    if bare.isalpha() or bare.startswith(("non-", "anti-")):
        for prefix in _NEGATION_PREFIXES:
            if bare.startswith(prefix) and len(bare) - len(prefix) >= 4:
                negated_base = bare[len(prefix):]
                break
        if negated_base is None and bare.endswith("less") and len(bare) > 6:
            negated_base = bare[:-4] + "ful"
    return _Word(
        vocabulary=tuple(vocabulary),
        number_word=_is_number_word(bare),
        content=None if bare in STOPWORDS else _content(bare),
        negation=bare in NEGATIONS or bare.endswith("n't") or bare.startswith(("non-", "no-")),
        pole=POLES.get(bare) or POLES.get(bare.rsplit("-", 1)[-1]),  # "re-upload" is an upload
        calendar=CALENDAR.get(bare),
        unit=UNITS.get(bare),
        negated_base=negated_base,
    )


class _Reader:
    """Walks a text's tokens once, filling the sets `Facts` is built from."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, bool]] = []  # (token, starts a sentence)
        previous = None
        for space, token in _SPACED_TOKEN.findall(text):
            initial = previous is None or previous in _SENTENCE_BREAK or "\n" in space
            self.tokens.append((token, initial))
            previous = token
        # In Title Case Text capitals say nothing about names; small words give it away ("How To Cook").
        small = [t for t, initial in self.tokens if not initial and t.lower() in STOPWORDS and t.isalpha()]
        self.title_case = len(small) >= 2 and sum(t[0].isupper() for t in small) >= 0.7 * len(small)
        self.sentence_asks = self._asking_sentences()
        self.numbers: set[str] = set()
        self.weak_numbers: set[str] = set()
        self.units: set[str] = set()
        self.keys: set[str] = set()
        self.acronyms: dict[str, set[str]] = {}
        self.vocabulary: set[str] = set()
        self.words: list[str] = []
        self.content: list[str] = []
        self.negations = 0
        self.poles: dict[str, list[int]] = {}
        self.pole_words: dict[str, set[str]] = {}
        self.superlative = False
        self.compares = False
        self.wh: set[str] = set()
        self.keyish: list[str | None] = []  # per token: the normal form of a name/number/unit, or None
        self.negated_bases: dict[str, str] = {}  # "safe" -> "unsafe" for every un-/dis-/-less word
        self._run: list[str] = []
        self._capitals: list[str] = []

    def read(self) -> None:
        previous_number: str | None = None
        open_parens = 0
        for position, (token, initial) in enumerate(self.tokens):
            keyish: str | None = None
            if not (token[0].isalnum() or token[0] in "$€£¥"):
                if self._run:
                    self._end_run()
                if self._capitals:
                    self._end_capitals()
                open_parens += (token == "(") - (token == ")" and open_parens > 0)
                previous_number = None
                self.keyish.append(None)
                continue
            lower = token.lower().replace("\u2019", "'")
            bare = lower[:-2] if lower.endswith("()") else lower
            word = _word(bare)
            self.words.append(lower)
            self.vocabulary.update(word.vocabulary)
            if word.negated_base is not None:
                self.negated_bases[word.negated_base] = bare
            if token.isdigit() and not open_parens and position + 1 < len(self.tokens) and self.tokens[position + 1][0] == ")":
                self.keyish.append(None)  # "1) first step": a list marker, not a quantity
                continue
            if word.number_word and not (previous_number is not None and (bare in SCALES or bare in UNITS)):
                self._run.extend(bare.split("-"))
                if word.pole is not None:  # "first" is a number and one end of a sequence
                    self._add_pole(bare, word.pole)
                if self._capitals:
                    self._end_capitals()
                self.keyish.append(None)
                continue
            if self._run:
                self._end_run()
            if previous_number is not None and bare in SCALES and previous_number.isdigit():
                # "5 million": the digits and the scale are one number.
                self.numbers.discard(previous_number)
                keyish = str(int(previous_number) * SCALES[bare])
                self.numbers.add(keyish)
            elif previous_number is not None and bare in UNITS:
                keyish = UNITS[bare]
                self.units.add(keyish)
            elif bare in VAGUE_SCALES:
                self.weak_numbers.add(str(VAGUE_SCALES[bare]))
            elif token.isalpha() or not any(c.isdigit() for c in token):
                keyish = self._read_word(token, bare, word, initial, position)
            else:
                keyish = self._read_digits(bare)
            previous_number = keyish if keyish is not None and keyish[:1].isdigit() else None
            self.keyish.append(keyish)
        self._end_run()
        self._end_capitals()

    def _end_run(self) -> None:
        words = [w for w in self._run if w != "and"]
        self._run.clear()
        if not words:
            return
        if len(words) == 1 and words[0] in WEAK_NUMBER_WORDS:
            self.weak_numbers.add("0.5" if words[0] == "half" else _written(words))
        elif all(w in SCALES for w in words):
            self.weak_numbers.add(_written(words))  # "a thousand files": a size, not a count
        else:
            self.numbers.add(_written(words))

    def _end_capitals(self) -> None:
        if len(self._capitals) >= 2:
            self.acronyms.setdefault("".join(w[0] for w in self._capitals), set()).update(self._capitals)
        self._capitals.clear()

    def _read_digits(self, bare: str) -> str:
        currency = UNITS.get(bare[0]) if bare[0] in "$€£¥" else None
        core = bare.lstrip("$€£¥")
        if re.fullmatch(r"v\d+(?:\.\d+)*", core):
            core = core[1:]  # v2.10.0 is version 2.10.0
        self._end_capitals()
        match = _NUMBER.fullmatch(core)
        if match:
            value, ordinal, suffix = _number(match.group(1)), match.group(2), match.group(3)
            if ordinal:
                value = "#" + value
            if suffix == "s":
                value += "s"  # 1990s is a decade, not a year
            elif suffix == "k" and value.isdigit():
                value = str(int(value) * 1000)
            elif suffix in UNITS:
                self.units.add(UNITS[suffix])
            elif suffix:
                self.keys.add(bare)  # 3D, 4x4: a name with a number in it
            if currency:
                self.units.add(currency)
            self.numbers.add(value)
            self.content.append(value)
            return value
        for digits in _DIGITS.findall(core):
            self.numbers.add(_number(digits))
        if any(c.isalpha() for c in core):
            self.keys.add(core)  # GPT-4, x86, python3
        self.content.append(stem(core))
        return stem(core)

    def _read_word(self, token: str, bare: str, word: _Word, initial: bool, position: int) -> str | None:
        keyish: str | None = None
        if word.negation and not (initial and bare == "no" and self._next(position) in (",", ".", "!")):
            # "No, it does not exist" answers; only the second negation states anything.
            self.negations += 1
            self._end_capitals()
            return None
        if word.pole is not None:
            self._add_pole(bare, word.pole)
        self.compares |= bare in COMPARISON_WORDS
        if self.sentence_asks[position]:
            asked = self._asked(bare)
            if asked:
                self.wh.add(asked)
        lower_case = token.islower()
        if not lower_case and token[0].isupper() and token.isalpha() and not token.isupper() and word.content:
            self._capitals.append(bare)
        elif self._capitals:
            self._end_capitals()
        if word.calendar is not None and (bare not in AMBIGUOUS_CALENDAR or token[0].isupper()):
            self.keys.add(word.calendar)
            keyish = word.calendar
        elif not (lower_case and token.isalpha()) and self._is_name(token, bare, initial):
            self.keys.add(bare)
            keyish = stem(bare)
            humps = _HUMPS.findall(token)
            if len(humps) >= 2:  # JavaScript -> js
                self.acronyms.setdefault("".join(h[0].lower() for h in humps), set()).add(bare)
        elif word.unit is not None and len(bare) > 3:
            keyish = word.unit  # "celsius to fahrenheit" without numbers
        if word.content is not None:
            self.content.append(word.content)
        return keyish

    def _add_pole(self, bare: str, pole: tuple[str, str]) -> None:
        scale, sign = pole
        self.poles.setdefault(scale, [0, 0])[sign == "-"] += 1
        self.pole_words.setdefault(scale, set()).add(bare)
        self.superlative |= bare in SUPERLATIVES or (bare.endswith("est") and len(bare) > 5)

    def _next(self, position: int) -> str:
        return self.tokens[position + 1][0] if position + 1 < len(self.tokens) else ""

    def _asking_sentences(self) -> list[bool]:
        """Per token: is its sentence a question? One ending in "?" is, and so is an unpunctuated
        last line ("where is the eiffel tower"); in "When it is set, ..." the "when" only joins."""
        asks, start = [False] * len(self.tokens), 0
        for i, (token, _) in enumerate(self.tokens):
            last = i == len(self.tokens) - 1
            if token in ".?!" or last:
                question = token == "?" or (last and token not in ".!")
                for j in range(start, i + 1):
                    asks[j] = question
                start = i + 1
        return asks

    def _asked(self, bare: str) -> str | None:
        """The kind of answer a question word asks for: who, when, where, why, how many..."""
        previous = self.words[-2] if len(self.words) >= 2 else ""
        if bare in WH_WORDS:
            return bare
        if bare in HOW_QUANTITY and previous == "how":
            return "how " + bare
        if previous in ("what", "which") and bare in ASKED_BY_NOUN:
            return ASKED_BY_NOUN[bare]  # "what year" asks when, "which country" asks where
        return None

    def _is_name(self, token: str, bare: str, initial: bool) -> bool:
        token = token[:-2] if token.endswith("()") else token
        if bare in ABBREVIATIONS:
            return False
        if "_" in bare or token.endswith("()") or "::" in bare or _IDENTIFIER_DOT.search(bare):
            return True  # a code identifier
        letters = token.replace("'", "").replace("\u2019", "").replace("-", "")
        if len(letters) >= 2 and letters.isupper() and bare not in COMMON_CAPITALISED:
            return True  # an acronym
        if _CAMEL.search(token):
            return True  # CamelCase, iPhone
        if not token[0].isupper() or self.title_case or initial:
            return False
        return bare not in STOPWORDS and bare != "i"

    def directions(self) -> frozenset[tuple[str, str]]:
        pairs: set[tuple[str, str]] = set()
        for i, (token, _) in enumerate(self.tokens):
            if token.lower() not in _DIRECTION_WORDS:
                continue
            before = next((self.keyish[j] for j in range(i - 1, max(i - 4, -1), -1) if self.keyish[j]), None)
            after = next((self.keyish[j] for j in range(i + 1, min(i + 4, len(self.tokens))) if self.keyish[j]), None)
            if before and after:
                pairs.add((before, after))
        return frozenset(pairs)


def parse_facts(text: str) -> Facts:
    # Each pattern runs only when its marker is present: most texts have no code, quotes or digits.
    code: frozenset[str] = frozenset()
    prose = text
    if "```" in text:
        code = frozenset(" ".join(block.split()) for block in _FENCED.findall(text))
        prose = _FENCED.sub(" ", text)
    quotes: frozenset[str] = frozenset()
    if any(mark in prose for mark in _QUOTE_MARKS):
        found = (next(g for g in groups if g) for groups in _QUOTED.findall(prose))
        quotes = frozenset(q for q in map(_normal_quote, found) if q)
    reader = _Reader(prose)
    reader.read()
    expressions: frozenset[str] = frozenset()
    if reader.numbers:
        expressions = frozenset(
            re.sub(r"\s+", "", e) for e in _EXPRESSION.findall(prose) if not re.fullmatch(r"[\d.\-/:]+", e)
        )
    return Facts(
        flat=" " + " ".join(reader.words) + " ",
        words_set=frozenset(reader.words),
        negated_bases=reader.negated_bases,
        vocabulary=frozenset(reader.vocabulary),
        content=tuple(reader.content),
        numbers=frozenset(reader.numbers),
        weak_numbers=frozenset(reader.weak_numbers),
        units=frozenset(reader.units),
        expressions=expressions,
        keys=frozenset(reader.keys),
        acronyms={k: frozenset(v) for k, v in reader.acronyms.items()},
        quotes=quotes,
        code=code,
        squashed=" ".join(text.split()),
        negations=reader.negations,
        poles={k: (v[0], v[1]) for k, v in reader.poles.items()},
        pole_words={k: frozenset(v) for k, v in reader.pole_words.items()},
        superlative=reader.superlative,
        compares=reader.compares,
        wh=frozenset(reader.wh),
        directions=reader.directions(),
        tail=" ".join(reader.words[WINDOW_WORDS:]),
    )
