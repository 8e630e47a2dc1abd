"""Tool selection by retrieval on BFCL v4: is the right function kept, and how much is saved.

Data: ../shared/data/bfcl-v4 (Berkeley Function Calling Leaderboard v4, Apache-2.0). Every
record with a ground truth (simple_python, multiple, parallel, parallel_multiple and the live_
sets) is asked through `gateway.context.tools.select`, the function the context stage calls.
Candidates are pooled within and across sets: a record's own functions plus distractors drawn
(seeded) from every other distinct function of all sets, `--pool` candidates in all, so each
request carries more tools than the stage's threshold. The query is the record's last user turn.

recall@k: share of records whose every ground-truth function is among the k kept (strict for
  the parallel_multiple sets, which call several).
tool tokens saved: 1 - tokens of the kept definitions / tokens of all candidates (tiktoken,
  counted as accounting counts them), over all records.
Irrelevance sets (irrelevance, live_irrelevance: no function fits): selection must never force
  a call; `tool_choice` is checked unchanged and no `tool_choice` is added.

    .venv/bin/python bench/tool_selection_eval.py                 # both embedders, ~1 minute
    .venv/bin/python bench/tool_selection_eval.py --embedder static --pool 100

Last line: RESULT recall_at_5=<r> tool_tokens_saved=<fraction>  (the stage's default embedder, k=5)
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread: the figures are per core

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.env import prepare_offline_environment  # noqa: E402

prepare_offline_environment()

from gateway.accounting.tokens import count_prompt  # noqa: E402
from gateway.context.tools import ToolVectors, select, tool_key  # noqa: E402

DATA = (
    ROOT.parent / "shared" / "data" / "bfcl-v4" / "berkeley-function-call-leaderboard" / "bfcl_eval" / "data"
)
RELEVANT_SETS = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
)
IRRELEVANT_SETS = ("irrelevance", "live_irrelevance")
KS = (1, 3, 5, 10)
MODEL = "gpt-4o"
DEFAULT_EMBEDDER = "onnx"


@dataclass(slots=True)
class Case:
    set_name: str
    messages: list[dict[str, Any]]
    own: list[dict[str, Any]]  # the record's own functions (BFCL form)
    truth: set[str]  # ground-truth function names; empty for irrelevance


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load(data: Path) -> list[Case]:
    cases: list[Case] = []
    for name in RELEVANT_SETS + IRRELEVANT_SETS:
        questions = _lines(data / f"BFCL_v4_{name}.json")
        answers = {}
        if name in RELEVANT_SETS:
            answers = {a["id"]: a for a in _lines(data / "possible_answer" / f"BFCL_v4_{name}.json")}
        for q in questions:
            turns = q["question"]
            messages = [m for turn in turns for m in turn]
            truth = {fn for call in answers.get(q["id"], {}).get("ground_truth", []) for fn in call}
            if name in RELEVANT_SETS and not truth:
                continue
            cases.append(Case(name, messages, q["function"], truth))
    return cases


def as_tool(function: dict[str, Any]) -> dict[str, Any]:
    parameters = dict(function.get("parameters") or {})
    if parameters.get("type") == "dict":
        parameters["type"] = "object"  # BFCL's Python-flavoured schema; OpenAI says object
    return {"type": "function", "function": {**function, "parameters": parameters}}


def tool_tokens(tools: list[dict[str, Any]]) -> int:
    return count_prompt("chat", MODEL, {"tools": tools, "messages": []}) - count_prompt(
        "chat", MODEL, {"messages": []}
    )


def pooled(cases: list[Case], pool: int, seed: int) -> list[list[dict[str, Any]]]:
    """Each case's candidate tools: its own functions plus distractors from every set, shuffled."""
    distinct: dict[str, dict[str, Any]] = {}
    for case in cases:
        for fn in case.own:
            distinct.setdefault(fn["name"], fn)
    every = list(distinct.values())
    rng = random.Random(seed)
    out: list[list[dict[str, Any]]] = []
    for case in cases:
        own_names = {fn["name"] for fn in case.own}
        need = max(0, pool - len(case.own))
        picks: list[dict[str, Any]] = []
        while len(picks) < need:
            fn = rng.choice(every)
            if fn["name"] not in own_names:
                own_names.add(fn["name"])
                picks.append(fn)
        candidates = [as_tool(fn) for fn in case.own + picks]
        rng.shuffle(candidates)
        out.append(candidates)
    return out


def make_embedder(kind: str) -> Any:
    if kind == "static":
        from gateway.routing.static_embedding import StaticEmbedder

        return StaticEmbedder()
    from gateway.semantic.embedder import load_embedder

    return load_embedder("onnx")


@dataclass(slots=True)
class Run:
    embedder: str
    recall: dict[int, float]
    by_set: dict[str, float]
    saved: dict[int, float]
    forced: int
    irrelevant: int
    ms_per_request: float
    tools_embedded: int
    embed_s: float
    peak_mb: float


def evaluate(kind: str, cases: list[Case], candidates: list[list[dict[str, Any]]], tokens: list[int]) -> Run:
    embedder = make_embedder(kind)
    vectors = ToolVectors(embedder)
    started = time.perf_counter()
    unique = {tool_key(t): t for tools in candidates for t in tools}
    vectors.of(list(unique.values()))  # warm: every definition embedded once, as a gateway would over time
    embed_s = time.perf_counter() - started
    hits = {k: 0 for k in KS}
    set_hits: dict[str, list[int]] = {}
    kept_tokens = {k: 0 for k in KS}
    total_tokens = 0
    relevant = forced = irrelevant = 0
    started = time.perf_counter()
    for case, tools, all_tokens in zip(cases, candidates, tokens, strict=True):
        body = {"messages": case.messages, "tools": tools}
        selections = {k: select(vectors, body, k) for k in KS}
        if not case.truth:
            irrelevant += 1
            chosen = selections[5]
            forced += int(chosen is None or "tool_choice" in body or len(chosen.kept) > 5)
            continue
        relevant += 1
        total_tokens += all_tokens
        for k, chosen in selections.items():
            assert chosen is not None
            names = {tools[i]["function"]["name"] for i in chosen.kept}
            ok = case.truth <= names
            hits[k] += ok
            kept_tokens[k] += tool_tokens([tools[i] for i in chosen.kept])
            if k == 5:
                set_hits.setdefault(case.set_name, []).append(int(ok))
    elapsed = time.perf_counter() - started
    return Run(
        embedder=kind,
        recall={k: hits[k] / relevant for k in KS},
        by_set={s: sum(v) / len(v) for s, v in set_hits.items()},
        saved={k: 1 - kept_tokens[k] / total_tokens for k in KS},
        forced=forced,
        irrelevant=irrelevant,
        ms_per_request=1000 * elapsed / (len(cases) * len(KS)),
        tools_embedded=len(unique),
        embed_s=embed_s,
        peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--pool", type=int, default=40, help="candidate tools per request (default 40)")
    parser.add_argument("--embedder", choices=("static", "onnx", "both"), default="both")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    cases = load(args.data)
    candidates = pooled(cases, args.pool, args.seed)
    tokens = [tool_tokens(tools) for tools in candidates]
    relevant = sum(1 for c in cases if c.truth)
    print(
        f"BFCL v4: {relevant} records with a ground truth, {len(cases) - relevant} irrelevance records; "
        f"{args.pool} candidate tools a request, mean {sum(tokens) / len(tokens):.0f} tool tokens\n"
    )
    kinds = ("static", "onnx") if args.embedder == "both" else (args.embedder,)
    runs = [evaluate(kind, cases, candidates, tokens) for kind in kinds]

    print(
        "| embedder | "
        + " | ".join(f"recall@{k}" for k in KS)
        + " | "
        + " | ".join(f"saved@{k}" for k in KS)
        + " | forced (irrelevance) | ms/request | embed all tools | peak RSS MiB |"
    )
    print("|---" * (4 + 2 * len(KS)) + "|")
    for run in runs:
        print(
            f"| {run.embedder} | "
            + " | ".join(f"{run.recall[k]:.3f}" for k in KS)
            + " | "
            + " | ".join(f"{run.saved[k]:.3f}" for k in KS)
            + f" | {run.forced}/{run.irrelevant} | {run.ms_per_request:.2f} | {run.tools_embedded} in {run.embed_s:.1f} s"
            f" | {run.peak_mb:.0f} |"
        )
    print("\nrecall@5 by set:\n")
    sets = list(runs[0].by_set)
    print("| embedder | " + " | ".join(sets) + " |")
    print("|---" * (1 + len(sets)) + "|")
    for run in runs:
        print(f"| {run.embedder} | " + " | ".join(f"{run.by_set[s]:.3f}" for s in sets) + " |")
    main_run = next((r for r in runs if r.embedder == DEFAULT_EMBEDDER), runs[0])
    print(f"\nRESULT recall_at_5={main_run.recall[5]:.4f} tool_tokens_saved={main_run.saved[5]:.4f}")


if __name__ == "__main__":
    main()
