"""Data for bench/semantic_cache_eval.py: the public sets, negatives built from them, a corpus.

Everything is read from ../shared/data (relative to the repository root) and never copied.
Built negatives are general edits a user makes when asking a *different* question (another
number, another name, a negation, the opposite word, another question word); each kind is
reported as its own row. The antonym pairs below are the benchmark's own list, written
apart from the verifier's lexicon, so the row measures how much of ordinary English the
lexicon covers rather than repeating it.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GPTCACHE = DATA / "gptcache-mock-paraphrase" / "examples" / "benchmark" / "mock_data.json"
MEANCACHE = DATA / "meancache-contextual-queries" / "dataset_contextual_queries"
SQUAD = DATA / "squad-v2-dev-half" / "data" / "dev-v2.0.json"
MT_BENCH = DATA / "mt-bench" / "fastchat" / "llm_judge" / "data" / "mt_bench" / "question.jsonl"

ANTONYMS = [
    ("advantages", "disadvantages"), ("benefits", "drawbacks"), ("before", "after"), ("more", "less"),
    ("largest", "smallest"), ("maximum", "minimum"), ("increase", "decrease"), ("add", "remove"),
    ("enable", "disable"), ("upload", "download"), ("import", "export"), ("local", "remote"),
    ("public", "private"), ("include", "exclude"), ("first", "last"), ("input", "output"),
    ("start", "stop"), ("read", "write"), ("encode", "decode"), ("synchronous", "asynchronous"),
    ("success", "failure"), ("true", "false"), ("positive", "negative"), ("safe", "dangerous"),
    ("fast", "slow"), ("high", "low"), ("easy", "difficult"), ("always", "never"), ("inside", "outside"),
    ("online", "offline"), ("static", "dynamic"), ("required", "optional"), ("same", "different"),
    ("with", "without"), ("accept", "reject"), ("upper", "lower"), ("rows", "columns"), ("train", "test"),
    ("best", "worst"), ("cheapest", "most expensive"), ("old", "new"), ("hot", "cold"), ("open", "closed"),
    ("small", "large"), ("short", "long"), ("early", "late"), ("buy", "sell"), ("win", "lose"),
    ("legal", "illegal"), ("possible", "impossible"), ("common", "rare"), ("strong", "weak"),
]
_AUXILIARIES = re.compile(r"\b(is|are|was|were|can|could|does|do|did|should|will|would|has|have)\b", re.I)
_WH = ("who", "when", "where", "why")


@dataclass(frozen=True, slots=True)
class Pair:
    origin: str
    similar: str


@dataclass(frozen=True, slots=True)
class Conversation:
    """One turn of context and the follow-up asked in it (MeanCache)."""

    main: str
    main_response: str
    follow_up: str
    follow_up_duplicate: str | None = None  # a paraphrase of the follow-up, same context


def paraphrase_pairs() -> list[Pair]:
    return [Pair(r["origin"], r["similar"]) for r in json.loads(GPTCACHE.read_text())]


def conversations() -> list[Conversation]:
    found: list[Conversation] = []
    for name in ("contextual_queries.json", "d1.json", "context2.json", "Synthetic_Dataset_Diverse.json"):
        for r in json.loads((MEANCACHE / name).read_text()):
            found.append(Conversation(r["Main Query"], r["Main Query Response"], r["Follow-Up Query"]))
    for r in json.loads((MEANCACHE / "new_claude.json").read_text()):
        found.append(Conversation(r["u0"], r["system_q0"], r["u1"], r["u1_duplicate"]))
    return found


def question_duplicates() -> list[Pair]:
    """MeanCache's first-turn questions and their paraphrases (new_claude u0 / u0_duplicate)."""
    return [Pair(r["u0"], r["u0_duplicate"]) for r in json.loads((MEANCACHE / "new_claude.json").read_text())]


def generic_follow_ups(seed: int) -> list[tuple[Conversation, Conversation]]:
    """Each context-free follow-up ("Can you expand on that?") asked in two different conversations."""
    mains = json.loads((MEANCACHE / "unique_u0.json").read_text())
    follow_ups = json.loads((MEANCACHE / "unique_u1.json").read_text())
    rng = random.Random(seed)
    pairs = []
    for follow_up in follow_ups:
        first, second = rng.sample(mains, 2)
        pairs.append((Conversation(first, "", follow_up), Conversation(second, "", follow_up)))
    return pairs


# --- built negatives: one edit that changes the question -------------------------------------

def change_number(text: str) -> str | None:
    match = re.search(r"(?<![\w.])(\d+)(?![\w.]\w)", text)
    if match is None:
        return None
    value = int(match.group(1))
    return text[: match.start()] + str(value + 1) + text[match.end():]


def negate(text: str) -> str | None:
    if re.search(r"\b(not|no|never|cannot)\b|n['\u2019]t\b", text, re.I):
        return None  # already negated: a second "not" makes broken English, not a realistic question
    match = _AUXILIARIES.search(text)
    if match is None:
        return None
    word = match.group(1)
    negated = "cannot" if word.lower() == "can" else f"{word} not"
    if word[0].isupper():
        negated = negated[0].upper() + negated[1:]
    return text[: match.start()] + negated + text[match.end():]


def swap_antonym(text: str) -> str | None:
    for left, right in ANTONYMS:
        for old, new in ((left, right), (right, left)):
            match = re.search(rf"\b{re.escape(old)}\b", text, re.I)
            if match and not re.search(rf"\b{re.escape(new)}\b", text, re.I):  # no "rows and rows"
                replacement = new.capitalize() if match.group(0)[0].isupper() else new
                return text[: match.start()] + replacement + text[match.end():]
    return None


def swap_question_word(text: str) -> str | None:
    match = re.match(r"\s*(who|when|where|why)\b", text, re.I)
    if match is None or not text.rstrip().endswith("?"):
        return None
    others = [w for w in _WH if w != match.group(1).lower()]
    new = others[len(text) % len(others)]
    return new.capitalize() + text[match.end():]


_NAME = re.compile(r"(?<=[\w,;:] )([A-Z][a-zA-Z]+(?:[A-Z][a-z]+)*|`[^`]+`)")


def name_pool(texts: list[str]) -> list[str]:
    """Capitalised words (not at a sentence start) and `identifiers` seen anywhere in `texts`."""
    return sorted({m.group(1) for t in texts for m in _NAME.finditer(t)})


def swap_name(text: str, pool: list[str], rng: random.Random) -> str | None:
    match = _NAME.search(text)
    if match is None:
        return None
    old = match.group(1)
    same_kind = [p for p in pool if p != old and p.startswith("`") == old.startswith("`") and p.lower() not in text.lower()]
    if not same_kind:
        return None
    return text[: match.start()] + rng.choice(same_kind) + text[match.end():]


def negatives(texts: list[str], seed: int) -> dict[str, list[tuple[str, str]]]:
    """kind -> [(cached text, edited query)]: every edit asks something the cached text does not answer."""
    rng = random.Random(seed)
    pool = name_pool(texts)
    made: dict[str, list[tuple[str, str]]] = {"number": [], "name": [], "negation": [], "antonym": [], "question word": []}
    existing = {t.lower() for t in texts}
    for text in texts:
        for kind, edited in (
            ("number", change_number(text)),
            ("name", swap_name(text, pool, rng)),
            ("negation", negate(text)),
            ("antonym", swap_antonym(text)),
            ("question word", swap_question_word(text)),
        ):
            # An edit that lands on another cached text asks that text's question: not a negative.
            if edited is not None and edited != text and edited.lower() not in existing:
                made[kind].append((text, edited))
    return made


# --- a real corpus for the latency runs --------------------------------------------------------

def corpus_sentences(limit: int) -> tuple[list[str], list[str]]:
    """Real questions and sentences (SQuAD questions and paragraph sentences, MT-Bench turns), and
    the SQuAD questions left out of them: human-written questions to time lookups with."""
    squad = json.loads(SQUAD.read_text())
    questions, sentences = [], []
    for article in squad["data"]:
        for paragraph in article["paragraphs"]:
            questions += [qa["question"].strip() for qa in paragraph["qas"]]
            sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+", paragraph["context"]) if len(s.split()) >= 5]
    turns = [t for line in MT_BENCH.read_text().splitlines() if line for t in json.loads(line)["turns"]]
    texts = list(dict.fromkeys(questions + turns + sentences))
    random.Random(0).shuffle(texts)
    corpus = texts[:limit]
    chosen = set(corpus)
    return corpus, [q for q in dict.fromkeys(questions) if q not in chosen]


def short_questions(limit: int) -> list[str]:
    """Short user questions from MeanCache (first turns and follow-ups), for lookup latency."""
    texts = []
    for c in conversations():
        texts += [c.main, c.follow_up]
    return list(dict.fromkeys(texts))[:limit]
