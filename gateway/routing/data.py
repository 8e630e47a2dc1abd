"""Labelled prompts for training a router: CSV (RouteLLM's layout) or JSONL, per-model scores.

CSV: a `prompt` column and one column per model holding its correctness (True/False, 1/0,
yes/no) or a number (a judge's score). JSONL: one object a line,
`{"prompt": "...", "scores": {"<model>": <number or bool>, ...}}`. Both give, per prompt,
the strong and the weak model's score; any other column or model is ignored.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_TRUE = {"true", "1", "yes", "y", "t", "correct"}
_FALSE = {"false", "0", "no", "n", "f", "incorrect", "wrong"}


class RouterDataError(ValueError):
    """Labelled data that cannot be read; the message names the file and what is wrong."""


@dataclass(slots=True)
class LabelledSet:
    prompts: list[str]
    strong: np.ndarray  # [n] float64, the strong model's score per prompt
    weak: np.ndarray  # [n] float64
    sources: dict[str, int] = field(default_factory=dict)  # file name -> rows kept
    excluded: int = 0  # rows dropped as excluded prompts

    def __len__(self) -> int:
        return len(self.prompts)

    def summary(self) -> dict[str, Any]:
        return {
            "rows": len(self),
            "sources": self.sources,
            "excluded_rows": self.excluded,
            "strong_mean_score": float(self.strong.mean()) if len(self) else None,
            "weak_mean_score": float(self.weak.mean()) if len(self) else None,
            "strong_needed_share": float((self.strong > self.weak).mean()) if len(self) else None,
        }


def _score(value: Any, where: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise RouterDataError(f"{where}: {value!r} is neither true/false nor a number") from None


def _csv_rows(path: Path, strong: str, weak: str) -> Iterable[tuple[str, float, float]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in ("prompt", strong, weak) if c not in columns]
        if missing:
            raise RouterDataError(
                f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; "
                f"the file has {', '.join(repr(c) for c in columns) or 'no header'}"
            )
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            yield row["prompt"], _score(row[strong], f"{where} column {strong!r}"), _score(row[weak], f"{where} column {weak!r}")


def _jsonl_rows(path: Path, strong: str, weak: str) -> Iterable[tuple[str, float, float]]:
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{path}:{line}"
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise RouterDataError(f"{where}: not JSON ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                raise RouterDataError(f'{where}: expected {{"prompt": "...", "scores": {{"<model>": <score>}}}}')
            scores = record.get("scores")
            if not isinstance(scores, dict):
                raise RouterDataError(f"{where}: 'scores' must be an object of model -> score")
            missing = [m for m in (strong, weak) if m not in scores]
            if missing:
                raise RouterDataError(
                    f"{where}: scores lack model(s) {', '.join(repr(m) for m in missing)}; "
                    f"it has {', '.join(repr(m) for m in scores) or 'none'}"
                )
            yield record["prompt"], _score(scores[strong], f"{where} {strong!r}"), _score(scores[weak], f"{where} {weak!r}")


def read_excluded(path: str | Path) -> set[str]:
    """Prompts to leave out: a JSONL of {"eval_prompt"|"prompt": ...} (RouteLLM's contaminated list)."""
    found = set()
    for line, text in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if text.strip():
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise RouterDataError(f"{path}:{line}: not JSON ({err.msg})") from None
            prompt = record.get("eval_prompt", record.get("prompt")) if isinstance(record, dict) else None
            if not isinstance(prompt, str):
                raise RouterDataError(f'{path}:{line}: expected {{"eval_prompt": "..."}} or {{"prompt": "..."}}')
            found.add(prompt)
    return found


def load_labelled(
    paths: list[str | Path], strong: str, weak: str, exclude: set[str] | None = None
) -> LabelledSet:
    """Every file's rows, in order; .jsonl files as JSONL, anything else as CSV."""
    if strong == weak:
        raise RouterDataError(f"the strong and the weak model are the same column {strong!r}")
    prompts: list[str] = []
    strong_scores: list[float] = []
    weak_scores: list[float] = []
    data = LabelledSet(prompts, np.zeros(0), np.zeros(0))
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise RouterDataError(f"{path}: no such file")
        reader = _jsonl_rows if path.suffix.lower() in (".jsonl", ".ndjson") else _csv_rows
        kept = 0
        try:
            for prompt, strong_score, weak_score in reader(path, strong, weak):
                if exclude and prompt in exclude:
                    data.excluded += 1
                    continue
                if not prompt.strip():
                    continue
                prompts.append(prompt)
                strong_scores.append(strong_score)
                weak_scores.append(weak_score)
                kept += 1
        except UnicodeDecodeError:
            raise RouterDataError(f"{path}: not UTF-8 text") from None
        except csv.Error as err:
            raise RouterDataError(f"{path}: not a readable CSV ({err})") from None
        data.sources[path.name] = kept
    if not prompts:
        raise RouterDataError(f"no labelled prompts in {', '.join(str(p) for p in paths)}")
    data.strong = np.array(strong_scores)
    data.weak = np.array(weak_scores)
    return data
