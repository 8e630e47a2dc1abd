"""`tollgate router train` as a user runs it: a subprocess, its output and exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "router", "train", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip


def write_csv(path: Path, rows: int = 40) -> Path:
    lines = [f'prompt,"{WEAK}","{STRONG}"']
    for i in range(rows):
        hard = i % 2 == 0
        prompt = f"Prove the lemma {i} about primes formally." if hard else f"Translate hello number {i} to French."
        lines.append(f'"{prompt}",{not hard},True')
    path.write_text("\n".join(lines) + "\n")
    return path


def test_train_on_a_csv_writes_the_artifact(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "labels.csv")
    result = run("--data", str(data), "--strong", STRONG, "--weak", WEAK, "--out", str(tmp_path / "r"),
                 "--folds", "4", "--features", "ngrams,structure")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "40 prompts (0 excluded)" in result.stdout
    assert "| 95.0% |" in result.stdout
    assert "logistic regression on expected_gain" in result.stdout
    meta = json.loads((tmp_path / "r" / "router.json").read_text())
    assert meta["strong_model"] == STRONG and meta["training_data"]["rows"] == 40
    assert meta["model"]["label_kind"] == "expected_gain"
    assert (tmp_path / "r" / "model.npz").is_file()


def test_train_on_jsonl_scores(tmp_path: Path) -> None:
    data = tmp_path / "scores.jsonl"
    data.write_text("".join(
        json.dumps({"prompt": f"question {i} " + ("prove" if i % 2 else "hi"), "scores": {"big": 9, "small": 4 if i % 2 else 9}}) + "\n"
        for i in range(20)
    ))  # fmt: skip
    result = run("--data", str(data), "--strong", "big", "--weak", "small", "--out", str(tmp_path / "r"),
                 "--folds", "2", "--features", "ngrams")  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_missing_columns_are_named(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "labels.csv")
    result = run("--data", str(data), "--strong", "gpt-5", "--weak", WEAK, "--out", str(tmp_path / "r"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"tollgate: {data}: missing column(s) 'gpt-5'; the file has 'prompt', ")
    assert "Traceback" not in result.stderr


def test_empty_data_is_an_error(tmp_path: Path) -> None:
    data = tmp_path / "empty.csv"
    data.write_text(f'prompt,"{WEAK}","{STRONG}"\n')
    result = run("--data", str(data), "--strong", STRONG, "--weak", WEAK, "--out", str(tmp_path / "r"))
    assert (result.returncode, result.stderr) == (2, f"tollgate: no labelled prompts in {data}\n")


def test_bad_values_and_missing_files_are_errors(tmp_path: Path) -> None:
    data = tmp_path / "bad.csv"
    data.write_text(f'prompt,"{WEAK}","{STRONG}"\nhello,maybe,True\n')
    result = run("--data", str(data), "--strong", STRONG, "--weak", WEAK, "--out", str(tmp_path / "r"))
    assert result.returncode == 2
    assert result.stderr == f"tollgate: {data}:2 column '{WEAK}': 'maybe' is neither true/false nor a number\n"
    result = run("--data", str(tmp_path / "nope.csv"), "--strong", STRONG, "--weak", WEAK, "--out", str(tmp_path / "r"))
    assert (result.returncode, result.stderr) == (2, f"tollgate: {tmp_path / 'nope.csv'}: no such file\n")


def test_too_many_folds_is_an_error(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "labels.csv", rows=4)
    result = run("--data", str(data), "--strong", STRONG, "--weak", WEAK, "--out", str(tmp_path / "r"), "--folds", "9")
    assert result.returncode == 2
    assert "--folds must be between 2 and the number of labelled prompts (4), got 9" in result.stderr


def test_the_hard_label_can_be_chosen(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "labels.csv")
    result = run("--data", str(data), "--strong", STRONG, "--weak", WEAK, "--out", str(tmp_path / "r"),
                 "--folds", "4", "--features", "ngrams,structure", "--label", "needs_strong")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r" / "router.json").read_text())["model"]["label_kind"] == "needs_strong"
