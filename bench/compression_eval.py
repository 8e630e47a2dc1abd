"""How much the compress stage removes, and whether what the answer needs survives.

Prompts from SQuAD v2 (dev, half; ../shared/data/squad-v2-dev-half): for each answerable
question, its own paragraph and `--distractors` other paragraphs of the same article (the
same topic, so the hard kind of distractor), shuffled, in one `<document>` of the last user
turn, the question after it, a system prompt before. Each prompt goes through
`gateway.compress.compress_messages`, the function the stage calls, at several levels.

- tokens: the whole prompt as billed (tiktoken, gpt-4o), before and after; ratio = before / after.
- spans kept: the share of questions whose gold answer span is still in the prompt verbatim
  *within its own sentence* (the sentence of the gold paragraph holding the span survives
  whole); "anywhere" also counts the span found elsewhere (a distractor naming it too).
- CPU: process time of the compression (splitting, scoring, token counting) per 1k prompt
  tokens, one thread.
- scorers: lexical (BM25 + entities) alone, + static MiniLM word-piece vectors (the default),
  and with `--full-minilm` the full encoder (int8 ONNX) instead, for comparison.

    .venv/bin/python bench/compression_eval.py             # ~1 minute on 2 shared cores
    .venv/bin/python bench/compression_eval.py --quick     # smoke run
    .venv/bin/python bench/compression_eval.py --full-minilm

Last line: RESULT ratio=<before/after at --level> spans_kept=<fraction> ms_per_1k_tokens=<ms>
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread: the figures are per core

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.env import prepare_offline_environment  # noqa: E402

prepare_offline_environment()

from gateway.accounting.tokens import count_prompt, count_text  # noqa: E402
from gateway.compress.messages import Options, compress_messages  # noqa: E402
from gateway.compress.text import sentences  # noqa: E402

SQUAD = ROOT.parent / "shared" / "data" / "squad-v2-dev-half" / "data" / "dev-v2.0.json"
MODEL = "gpt-4o"
SYSTEM = "Answer the question using only the document. Quote the answer exactly as it appears."
LEVELS = [0.7, 0.5, 0.45, 0.4, 0.33, 0.25]


@dataclass(frozen=True, slots=True)
class Case:
    messages: list[dict[str, Any]]
    answers: list[str]
    gold_sentence: str  # the gold paragraph's sentence that holds the first answer span


def _sentence_at(paragraph: str, offset: int, answer: str) -> str:
    position = 0
    for part in sentences(paragraph):
        end = position + len(part.text)
        if position <= offset < end:
            # A span running past its sentence (a split inside it) needs the next one too.
            text = part.text
            if offset + len(answer) > end:
                text = paragraph[position : offset + len(answer)]
            return text.strip()
        position = end
    return answer


def cases(distractors: int, limit: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    out: list[Case] = []
    for article in json.loads(SQUAD.read_text())["data"]:
        paragraphs = [p["context"] for p in article["paragraphs"]]
        if len(paragraphs) <= distractors:
            continue
        for index, paragraph in enumerate(article["paragraphs"]):
            for qa in paragraph["qas"]:
                if qa.get("is_impossible") or not qa["answers"]:
                    continue
                others = rng.sample([p for k, p in enumerate(paragraphs) if k != index], distractors)
                chosen = [paragraph["context"], *others]
                rng.shuffle(chosen)
                document = "\n\n".join(chosen)
                first = qa["answers"][0]
                messages = [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"<document>\n{document}\n</document>\n\nQuestion: {qa['question']}"},
                ]
                answers = list(dict.fromkeys(a["text"] for a in qa["answers"]))
                gold = _sentence_at(paragraph["context"], first["answer_start"], first["text"])
                out.append(Case(messages, answers, gold))
    rng.shuffle(out)
    return out[:limit]


class FullEncoder:
    """The full MiniLM encoder behind the static embedder's interface, for comparison."""

    def __init__(self) -> None:
        from gateway.semantic.embedder import load_embedder

        self._embedder = load_embedder("onnx")

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._embedder.embed(texts))


@dataclass
class Row:
    before: int = 0
    after: int = 0
    kept_strict: int = 0
    kept_anywhere: int = 0
    cpu_s: float = 0.0
    n: int = 0


def run(all_cases: list[Case], level: float | None, embedder: Any) -> Row:
    options = Options(keep_ratio=level, min_block_tokens=300)
    count = partial(count_text, MODEL)
    row = Row()
    for case in all_cases:
        start = time.process_time()
        outcome = compress_messages(case.messages, options, count, embedder)
        row.cpu_s += time.process_time() - start
        prompt = outcome.messages[-1]["content"]
        row.before += count_prompt("chat", MODEL, {"messages": case.messages})
        row.after += count_prompt("chat", MODEL, {"messages": outcome.messages})
        row.kept_strict += case.gold_sentence in prompt
        row.kept_anywhere += any(answer in prompt for answer in case.answers)
        row.n += 1
    return row


def table(headers: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def _peak_rss_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return float(line.split()[1]) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 questions: a smoke run")
    ap.add_argument("--questions", type=int, default=400)
    ap.add_argument("--distractors", type=int, default=4, help="other paragraphs of the same article per prompt")
    ap.add_argument("--level", type=float, default=0.45, help="the level of the RESULT line")
    ap.add_argument("--full-minilm", action="store_true", help="also score with the full encoder")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    all_cases = cases(args.distractors, 100 if args.quick else args.questions, args.seed)
    from gateway.routing.static_embedding import shared_static_embedder

    start = time.perf_counter()
    static = shared_static_embedder()
    print(f"{len(all_cases)} questions, each with {args.distractors} distractor paragraphs of its article; "
          f"static embedder loaded in {time.perf_counter() - start:.2f} s")
    scorers: dict[str, Any] = {"lexical": None, "lexical + static MiniLM": static}
    if args.full_minilm:
        scorers["lexical + full MiniLM"] = FullEncoder()

    lossless = run(all_cases, None, None)
    print(f"\nlossless only: {lossless.before / lossless.n:.0f} -> {lossless.after / lossless.n:.0f} tokens a prompt "
          f"(SQuAD paragraphs have little whitespace to spare), {lossless.cpu_s / lossless.before * 1e6:.2f} ms per 1k")
    results: dict[tuple[str, float], Row] = {}
    for name, embedder in scorers.items():
        print(f"\n## Scorer: {name}\n")
        rows = []
        for level in sorted({*LEVELS, args.level}, reverse=True):
            row = results[(name, level)] = run(all_cases, level, embedder)
            # Memory apart from time: tracing allocations slows Python several times over.
            tracemalloc.start()
            run(all_cases[:20], level, embedder)
            traced = tracemalloc.get_traced_memory()[1] / 1024
            tracemalloc.stop()
            rows.append([f"{level:.2f}", f"{row.before / row.n:.0f}", f"{row.after / row.n:.0f}",
                         f"{row.before / row.after:.2f}x", f"{row.kept_strict / row.n:.3f}",
                         f"{row.kept_anywhere / row.n:.3f}", f"{row.cpu_s / row.before * 1e6:.2f}",
                         f"{traced:.0f}", f"{_peak_rss_mb():.0f}"])
        table(["level", "tokens before", "tokens after", "ratio", "spans kept", "spans anywhere", "CPU ms / 1k tok",
               "traced peak KiB", "peak RSS MiB"], rows)
    best = results[("lexical + static MiniLM", args.level)]
    print(f"\nspans kept: the gold span inside its own sentence; spans anywhere: the answer text anywhere in the "
          f"prompt. {best.n} questions, level {args.level}.")
    print(f"RESULT ratio={best.before / best.after:.2f} spans_kept={best.kept_strict / best.n:.3f} "
          f"ms_per_1k_tokens={best.cpu_s / best.before * 1e6:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
