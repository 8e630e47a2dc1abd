"""How often the semantic cache serves the right answer, how often a wrong one, and how fast.

Every decision goes through `gateway.semantic.matcher.best_match`, the function the
semantic_cache stage calls, with the real embedder and index.

Paraphrases (GPTCache mock_data.json, 999 {origin, similar} pairs, 964 distinct origins).
  Held-out protocol, two folds: a seeded half of the distinct origins is cached, every
  `similar` is asked; then the halves swap. A query whose origin is cached and that gets it
  is a true hit; one that gets another entry, or whose origin is not cached and gets
  anything, is a false hit. precision = true hits / hits; recall = true hits / queries whose
  origin is cached; hit rate = hits / queries. Also GPTCache's own protocol (all origins
  cached) for its published right / wrong / miss counts.
Built negatives: each cached text edited into a different question (a number, a name, a
  negation, the opposite word, another question word; bench/semantic_cache_data.py); any
  hit is false. MeanCache follow-ups asked standalone against its first-turn questions.
Context (MeanCache): the stage keys each entry by a fingerprint of the conversation before
  the last message and searches only entries with the same fingerprint. Each recorded
  follow-up is asked in its own conversation with its own entry evicted (leave one out), and
  each context-free follow-up ("Can you expand on that?") is cached in one conversation and
  asked in another. A hit from a conversation with a different context is a contextual false
  hit; the count is also shown with every entry in one namespace (no binding).
Latency: one thread, embedding included, at 1k / 10k / 100k entries; real sentences are
  embedded and the rest of the 100k derived from them (the output's corpus line says how).

    .venv/bin/python bench/semantic_cache_eval.py            # ~2 minutes on 2 shared cores
    .venv/bin/python bench/semantic_cache_eval.py --quick    # smoke run, ~30 s
    .venv/bin/python bench/semantic_cache_eval.py --backend sentence-transformers --no-latency

Last line: RESULT precision=.. precision_restated=.. recall=.. false_hits_contextual=.. lookup_p50_ms_100k=..
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread: the figures are per core

import argparse  # noqa: E402
import hashlib  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import semantic_cache_data as data  # noqa: E402
from gateway.env import prepare_offline_environment  # noqa: E402

prepare_offline_environment()

from gateway.semantic import verify as verify_module  # noqa: E402
from gateway.semantic.embedder import Embedder, load_embedder  # noqa: E402
from gateway.semantic.index import VectorIndex  # noqa: E402
from gateway.semantic.matcher import DEFAULT_THRESHOLD, best_match  # noqa: E402

THRESHOLDS = [round(0.70 + 0.025 * i, 3) for i in range(11)]


class Vectors:
    """Every text embedded once, in length-sorted batches (padding costs as much as text)."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.cache: dict[str, np.ndarray] = {}
        self.seconds = 0.0

    def add(self, texts: list[str], batch: int = 16) -> None:
        todo = sorted({t for t in texts if t not in self.cache}, key=len)
        start = time.perf_counter()
        for i in range(0, len(todo), batch):
            chunk = todo[i : i + batch]
            for text, vector in zip(chunk, self.embedder.embed(chunk), strict=True):
                self.cache[text] = vector
        self.seconds += time.perf_counter() - start

    def __getitem__(self, text: str) -> np.ndarray:
        return self.cache[text]


def _index(texts: list[str], vectors: Vectors) -> VectorIndex:
    index = VectorIndex(vectors.embedder.dim)
    if texts:
        index.add(range(len(texts)), np.stack([vectors[t] for t in texts]))
    return index


_BAG_STOP = frozenset("a an the of to in on for and or is are be can by with as it its this that from".split())


def restates(a: str, b: str) -> bool:
    """Two texts stating one fact in nearly the same words (GPTCache's set repeats facts across
    pairs): content-word overlap (Jaccard) of at least 0.6, spelling and backticks ignored."""
    bag_a, bag_b = ({w.rstrip("s") for w in re.findall(r"[a-z0-9_]+", t.lower())} - _BAG_STOP for t in (a, b))
    return bool(bag_a | bag_b) and len(bag_a & bag_b) / len(bag_a | bag_b) >= 0.6


@dataclass
class Counts:
    true_hits: int = 0
    restated: int = 0  # false hits whose entry restates the query's own origin (see `restates`)
    wrong_entry: int = 0
    held_out_hits: int = 0
    misses: int = 0
    positives: int = 0
    queries: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def false_hits(self) -> int:
        return self.wrong_entry + self.held_out_hits

    @property
    def precision(self) -> float:
        hits = self.true_hits + self.false_hits
        return self.true_hits / hits if hits else 1.0

    @property
    def precision_restated(self) -> float:
        hits = self.true_hits + self.false_hits
        return (self.true_hits + self.restated) / hits if hits else 1.0

    @property
    def recall(self) -> float:
        return self.true_hits / self.positives if self.positives else 0.0

    @property
    def hit_rate(self) -> float:
        return (self.true_hits + self.false_hits) / self.queries if self.queries else 0.0


def _ask(cached: list[str], queries: list[tuple[str, str | None]], vectors: Vectors, threshold: float,
         verify: bool, counts: Counts, index: VectorIndex | None = None) -> Counts:
    """Ask each (query, expected cached text or None) against a namespace holding `cached`."""
    index = index or _index(cached, vectors)
    present = set(cached)
    for query, expected in queries:
        counts.queries += 1
        counts.positives += expected is not None and expected in present
        match = best_match(query, vectors[query], index, cached.__getitem__, threshold=threshold, verify=verify)
        if match is None:
            counts.misses += 1
        elif expected is not None and cached[match.id] == expected:
            counts.true_hits += 1
        else:
            counts.restated += expected is not None and restates(cached[match.id], expected)
            if expected is not None and expected in present:
                counts.wrong_entry += 1
            else:
                counts.held_out_hits += 1
            if len(counts.examples) < 4:
                counts.examples.append(f"{query!r} -> {cached[match.id]!r} ({match.similarity:.3f})")
    return counts


def paraphrase_folds(pairs: list[data.Pair], seed: int) -> list[list[str]]:
    origins = sorted({p.origin for p in pairs})
    random.Random(seed).shuffle(origins)
    half = len(origins) // 2
    return [origins[:half], origins[half:]]


def paraphrase_counts(pairs: list[data.Pair], folds: list[list[str]], vectors: Vectors, threshold: float,
                      verify: bool, indexes: list[VectorIndex]) -> Counts:
    counts = Counts()
    queries: list[tuple[str, str | None]] = [(p.similar, p.origin) for p in pairs]
    for cached, index in zip(folds, indexes, strict=True):
        _ask(cached, queries, vectors, threshold, verify, counts, index)
    return counts


def fingerprint(conversation: data.Conversation | None) -> str:
    """What the stage binds an entry to: the context before the last user message."""
    if conversation is None:
        return "first-turn"
    context = f"user:{conversation.main}\nassistant:{conversation.main_response}"
    return hashlib.sha256(context.encode()).hexdigest()[:16]


def contextual(conversations: list[data.Conversation], generic: list[tuple[data.Conversation, data.Conversation]],
               vectors: Vectors, threshold: float, bind: bool) -> dict[str, int]:
    """Contextual false hits (and the same-context paraphrase hits) with or without binding."""
    entries = [(fingerprint(c) if bind else "all", c.follow_up, c) for c in conversations]
    entries += [(fingerprint(a) if bind else "all", a.follow_up, a) for a, _ in generic]
    spaces: dict[str, list[int]] = {}
    for n, (space, _, _) in enumerate(entries):
        spaces.setdefault(space, []).append(n)
    indexes = {space: _index([entries[n][1] for n in members], vectors) for space, members in spaces.items()}
    result = {"asked": 0, "false_hits": 0, "same_context_hits": 0, "duplicates": 0, "duplicate_hits": 0}

    def ask(text: str, asked_in: data.Conversation, evicted: int | None) -> tuple[int, data.Conversation] | None:
        space = fingerprint(asked_in) if bind else "all"
        members = spaces.get(space, [])
        if not members:
            return None
        def text_of(i: int) -> str | None:
            return None if members[i] == evicted else entries[members[i]][1]
        match = best_match(text, vectors[text], indexes[space], text_of, threshold=threshold)
        return None if match is None else (members[match.id], entries[members[match.id]][2])

    for n, conversation in enumerate(conversations):
        result["asked"] += 1
        served = ask(conversation.follow_up, conversation, evicted=n)
        if served is not None:
            same = fingerprint(served[1]) == fingerprint(conversation)
            result["same_context_hits" if same else "false_hits"] += 1
        if conversation.follow_up_duplicate is not None:
            result["duplicates"] += 1
            served = ask(conversation.follow_up_duplicate, conversation, evicted=None)
            if served is not None and fingerprint(served[1]) == fingerprint(conversation):
                result["duplicate_hits"] += 1
            elif served is not None:
                result["false_hits"] += 1
    for _, second in generic:
        result["asked"] += 1
        served = ask(second.follow_up, second, evicted=None)
        if served is not None and fingerprint(served[1]) != fingerprint(second):
            result["false_hits"] += 1
    return result


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _rss_mb() -> tuple[float, float]:
    status = Path("/proc/self/status").read_text()
    def field_kb(name: str) -> float:
        line = next(x for x in status.splitlines() if x.startswith(name + ":"))
        return float(line.split()[1]) / 1024
    return field_kb("VmRSS"), field_kb("VmHWM")


def derived_vectors(real: np.ndarray, count: int, seed: int) -> np.ndarray:
    """unit(r_i + 0.5 r_j + noise): two real sentences mixed, plus Gaussian noise at half the
    corpus's per-dimension spread, so entries sit in the region real sentences occupy."""
    rng = np.random.default_rng(seed)
    spread = real.std(axis=0)
    out = np.empty((count, real.shape[1]), dtype=np.float32)
    for start in range(0, count, 20_000):
        n = min(20_000, count - start)
        mix = real[rng.integers(0, len(real), n)] + 0.5 * real[rng.integers(0, len(real), n)]
        mix += 0.5 * spread * rng.standard_normal(mix.shape).astype(np.float32)
        out[start : start + n] = mix / np.linalg.norm(mix, axis=1, keepdims=True)
    return out


def _nearest_similarity(vectors: np.ndarray, sample: np.ndarray) -> float:
    similarities = sample @ vectors.T  # [s, n]
    similarities[similarities > 0.9999] = -1.0  # itself
    return float(np.median(similarities.max(axis=1)))


def latency(embedder: Embedder, vectors: Vectors, corpus: list[str], query_sets: dict[str, list[str]],
            sizes: list[int], seed: int) -> tuple[list[list[str]], dict[int, float]]:
    real_texts = list(vectors.cache)
    real = np.stack([vectors[t] for t in real_texts])
    largest = max(sizes)
    extra = derived_vectors(real, max(0, largest - len(real)), seed)
    everything = np.concatenate([real, extra])[:largest]
    texts = [real_texts[i % len(real_texts)] for i in range(largest)]
    sample = np.random.default_rng(seed).choice(len(real), 300, replace=False)
    print(f"\ncorpus: {len(real)} real sentences embedded ({len(corpus)} from SQuAD v2 dev half and MT-Bench, "
          f"the rest the sets above); {len(extra)} derived vectors = unit(r_i + 0.5 r_j + noise at 0.5x the "
          f"per-dimension spread). Median nearest-neighbour similarity: real {_nearest_similarity(real, real[sample]):.3f}, "
          f"derived {_nearest_similarity(everything, extra[:300]) if len(extra) else float('nan'):.3f}")
    rows: list[list[str]] = []
    pooled: dict[int, list[float]] = {}
    for size in sizes:
        rss_before, _ = _rss_mb()
        index = VectorIndex(embedder.dim)
        start = time.perf_counter()
        for i in range(0, size, 8192):
            index.add(range(i, min(size, i + 8192)), everything[i : min(size, i + 8192)])
        build_s = time.perf_counter() - start
        rss_after, peak = _rss_mb()
        text_of = texts.__getitem__
        for name, queries in query_sets.items():
            lookup, embed, search = [], [], []
            for query in queries:
                t0 = time.perf_counter()
                vector = embedder.embed([query])[0]
                t1 = time.perf_counter()
                best_match(query, vector, index, text_of, threshold=DEFAULT_THRESHOLD)
                t2 = time.perf_counter()
                index.search(vector, 4)
                t3 = time.perf_counter()
                lookup.append((t2 - t0) * 1e3)
                embed.append((t1 - t0) * 1e3)
                search.append((t3 - t2) * 1e3)
            tracemalloc.start()
            for query in queries[:50]:
                best_match(query, embedder.embed([query])[0], index, text_of, threshold=DEFAULT_THRESHOLD)
            traced_peak = tracemalloc.get_traced_memory()[1] / 1024
            tracemalloc.stop()
            pooled.setdefault(size, []).extend(lookup)
            rows.append([f"{size:,}", index.kind, name, f"{_percentile(lookup, 50):.2f}", f"{_percentile(lookup, 99):.2f}",
                         f"{_percentile(embed, 50):.2f}", f"{_percentile(search, 50):.3f}", f"{_percentile(search, 99):.3f}",
                         f"{index.nbytes / 2**20:.1f}", f"{index.nbytes / size:,.0f}", f"{rss_after - rss_before:+.0f}",
                         f"{peak:.0f}", f"{traced_peak:.0f}", f"{build_s:.1f}"])
        rows.append([f"{size:,}", index.kind, "all three sets, pooled", f"{_percentile(pooled[size], 50):.2f}",
                     f"{_percentile(pooled[size], 99):.2f}"] + [""] * 9)
        del index
    return rows, {size: _percentile(values, 50) for size, values in pooled.items()}


def table(headers: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def _verify_cost(pairs: list[tuple[str, str]]) -> tuple[float, float]:
    start = time.perf_counter()
    for a, b in pairs:
        verify_module._facts.cache_clear()
        verify_module.verify(a, b)
    cold = (time.perf_counter() - start) / len(pairs) * 1e6
    for a, b in pairs:
        verify_module.verify(a, b)
    start = time.perf_counter()
    for a, b in pairs:
        verify_module.verify(a, b)
    return cold, (time.perf_counter() - start) / len(pairs) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer pairs and entries: a smoke run")
    ap.add_argument("--backend", choices=["onnx", "sentence-transformers"], default="onnx")
    ap.add_argument("--model", default=None, help="another model file/directory for the backend")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="the threshold of the RESULT line")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-latency", action="store_true", help="skip the latency runs (the RESULT line then has none)")
    args = ap.parse_args()

    start = time.perf_counter()
    embedder = load_embedder(args.backend, args.model)
    print(f"embedder {embedder.name} ({args.backend}, dim {embedder.dim}) loaded in {time.perf_counter() - start:.2f} s; "
          f"threshold {args.threshold}")
    vectors = Vectors(embedder)
    pairs = data.paraphrase_pairs()
    conversations = data.conversations()
    generic = data.generic_follow_ups(args.seed)
    duplicates = data.question_duplicates()
    if args.quick:
        pairs, conversations = random.Random(args.seed).sample(pairs, 250), conversations[::4]
        generic, duplicates = generic[:30], duplicates[:40]
    questions = list(dict.fromkeys([c.main for c in conversations] + [d.origin for d in duplicates]))
    follow_ups = [f for f in dict.fromkeys(c.follow_up for c in conversations) if f not in set(questions)]
    origins = sorted({p.origin for p in pairs})
    built = {f"{kind} (GPTCache origins)": v for kind, v in data.negatives(origins, args.seed).items()}
    built.update({f"{kind} (MeanCache questions)": v for kind, v in data.negatives(questions, args.seed).items()})
    texts = [p.origin for p in pairs] + [p.similar for p in pairs] + questions + follow_ups
    texts += [c.follow_up for c in conversations] + [c.follow_up_duplicate for c in conversations if c.follow_up_duplicate]
    texts += [a.follow_up for a, _ in generic] + [d.similar for d in duplicates]
    texts += [edited for rows in built.values() for _, edited in rows]
    vectors.add(texts)
    print(f"embedded {len(vectors.cache)} distinct texts in {vectors.seconds:.1f} s "
          f"({len(vectors.cache) / vectors.seconds:.0f}/s, batches of 16 sorted by length)")

    folds = paraphrase_folds(pairs, args.seed)
    fold_indexes = [_index(f, vectors) for f in folds]
    print(f"\n## Paraphrases, held out (GPTCache, {len(pairs)} queries, 2 folds of {len(folds[0])} cached origins)\n")
    rows = []
    for threshold in THRESHOLDS:
        row = [f"{threshold:.3f}"]
        for verify in (False, True):
            c = paraphrase_counts(pairs, folds, vectors, threshold, verify, fold_indexes)
            row += [f"{c.precision:.3f}", f"{c.precision_restated:.3f}", f"{c.recall:.3f}", f"{c.hit_rate:.3f}",
                    f"{c.true_hits}/{c.false_hits}"]
        rows.append(row)
    table(["threshold", "precision", "p. restated", "recall", "hit rate", "true/false", "precision +v", "p. restated +v",
           "recall +v", "hit rate +v", "true/false +v"], rows)
    print("\n(+v: with verification. p. restated counts a false hit as right when the entry restates the query's own "
          "origin in nearly the same words: content-word Jaccard >= 0.6)")
    final = paraphrase_counts(pairs, folds, vectors, args.threshold, True, fold_indexes)
    print(f"\nat {args.threshold} with verification: {final.true_hits} true hits, {final.wrong_entry} wrong entries, "
          f"{final.held_out_hits} hits for held-out origins ({final.restated} of the false hits restate the query's "
          f"origin), {final.misses} misses; false hits:")
    for example in final.examples:
        print(f"  {example}")

    print("\n## GPTCache's protocol (every origin cached, every similar asked): right / wrong / miss\n")
    all_origins = sorted({p.origin for p in pairs})
    all_index = _index(all_origins, vectors)
    rows = []
    for threshold in sorted({0.95, 0.90, 0.85, 0.80, args.threshold}, reverse=True):
        row = [f"{threshold:.3f}"]
        for verify in (False, True):
            c = _ask(all_origins, [(p.similar, p.origin) for p in pairs], vectors, threshold, verify, Counts(), all_index)
            row.append(f"{c.true_hits} / {c.false_hits} / {c.misses}")
        rows.append(row)
    table(["threshold", "embedding only", "with verification"], rows)

    print(f"\n## Built negatives and other pairs at {args.threshold} (any hit on a negative is false)\n")
    rows = []
    question_index = _index(questions, vectors)
    neg_examples: list[str] = []
    total_negatives = [0, 0, 0]
    for kind, edits in [*built.items(), ("follow-up asked standalone (MeanCache)", [(None, f) for f in follow_ups])]:
        if not edits:
            continue
        cached, index = (questions, question_index) if "MeanCache" in kind else (all_origins, all_index)
        plain = _ask(cached, [(q, None) for _, q in edits], vectors, args.threshold, False, Counts(), index)
        checked = _ask(cached, [(q, None) for _, q in edits], vectors, args.threshold, True, Counts(), index)
        rows.append([kind, str(len(edits)), str(plain.false_hits), str(checked.false_hits)])
        neg_examples += checked.examples[:2]
        for i, v in enumerate((len(edits), plain.false_hits, checked.false_hits)):
            total_negatives[i] += v
    rows.append(["all built negatives", *map(str, total_negatives)])
    dup = _ask([d.origin for d in duplicates], [(d.similar, d.origin) for d in duplicates], vectors, args.threshold,
               True, Counts())
    rows.append(["paraphrased first turns (MeanCache u0 / u0_duplicate): own entry / another row's / miss",
                 str(dup.queries), "", f"{dup.true_hits} / {dup.false_hits} / {dup.misses}"])
    table(["set", "queries", "false hits, embedding only", "false hits, with verification"], rows)
    for example in neg_examples:
        print(f"  false hit: {example}")
    for example in dup.examples[:3]:
        print(f"  another row's entry (several rows ask about one topic): {example}")

    print(f"\n## Contextual follow-ups (MeanCache) at {args.threshold}, with verification\n")
    bound = contextual(conversations, generic, vectors, args.threshold, bind=True)
    unbound = contextual(conversations, generic, vectors, args.threshold, bind=False)
    rows = [[name, str(r["asked"]), str(r["false_hits"]), str(r["same_context_hits"]),
             f"{r['duplicate_hits']}/{r['duplicates']}"] for name, r in (("bound to context", bound),
                                                                          ("one namespace (no binding)", unbound))]
    table(["entries", "follow-ups asked", "contextual false hits", "same-context hits",
           "follow-up paraphrase hits (same context)"], rows)

    statement_pairs = [(p.similar, o) for i, p in enumerate(pairs[:400]) for o in (p.origin, origins[i * 7919 % len(origins)])]
    question_pairs = [(d.similar, d.origin) for d in duplicates] + [(c.follow_up, c.main) for c in conversations]
    print()
    for name, verify_pairs in (("statement", statement_pairs), ("question", question_pairs)):
        cold, warm = _verify_cost(verify_pairs)
        print(f"verify(), {len(verify_pairs)} {name} pairs: {cold:.1f} us a pair parsing both texts, "
              f"{warm:.1f} us with both parsed")

    if args.no_latency:
        print(f"\nRESULT precision={final.precision:.3f} precision_restated={final.precision_restated:.3f} "
              f"recall={final.recall:.3f} false_hits_contextual={bound['false_hits']}")
        return 0
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    corpus, held_out_questions = data.corpus_sentences(1_500 if args.quick else 9_000)
    vectors.add(corpus)
    count = 40 if args.quick else 200
    query_sets = {
        "statements (GPTCache similar, ~29 pieces)": [p.similar for p in pairs][:count],
        "questions (SQuAD, human, ~14 pieces)": held_out_questions[:count],
        "questions (MeanCache, ~10 pieces)": data.short_questions(count),
    }
    print(f"\n## Lookup latency, one thread ({count} queries per set; embedding included)\n")
    lat_rows, p50s = latency(embedder, vectors, corpus, query_sets, sizes, args.seed)
    table(["entries", "index", "queries", "lookup p50 ms", "lookup p99 ms", "embed p50 ms", "search p50 ms",
           "search p99 ms", "index MiB", "bytes/entry", "RSS growth MiB", "peak RSS MiB", "tracemalloc peak KiB",
           "build s"], lat_rows)
    print(f"\nmax RSS of the run: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    largest = max(sizes)
    key = "lookup_p50_ms_100k" if largest == 100_000 else f"lookup_p50_ms_{largest // 1000}k"
    print(f"\nRESULT precision={final.precision:.3f} precision_restated={final.precision_restated:.3f} "
          f"recall={final.recall:.3f} false_hits_contextual={bound['false_hits']} {key}={p50s[largest]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
