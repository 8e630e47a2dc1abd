"""Loading HF directories: dtypes, and a clear error for every way a directory can be wrong."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from local_engine import Config, LLMEngine, SamplingParams
from local_engine.cli import main
from local_engine.config import resolve_dtype
from local_engine.errors import ModelLoadError


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_unsupported_architecture_is_named(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(model_dirs["llama"], tmp_path / "gpt2")
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="unsupported architecture 'GPT2LMHeadModel'; supported: Llama"):
        Config(str(d))


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("config.json", "config.json not found"),
        ("model.safetensors", "no \\*.safetensors weight files found"),
        ("tokenizer.json", "tokenizer.json not found"),
    ],
)
def test_missing_files_are_named(model_dirs: dict[str, Path], tmp_path: Path, missing: str, message: str) -> None:
    d = _copy(model_dirs["qwen2"], tmp_path / "m")
    (d / missing).unlink()
    with pytest.raises(ModelLoadError, match=message):
        LLMEngine(Config(str(d), num_kv_blocks=16))


def test_missing_weight_tensor_is_named(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(model_dirs["qwen3"], tmp_path / "m")
    tensors = load_file(str(d / "model.safetensors"))
    del tensors["model.layers.1.self_attn.k_norm.weight"]
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"model\.layers\.1\.self_attn\.k_norm\.weight"):
        LLMEngine(Config(str(d), num_kv_blocks=16))


def test_bfloat16_loads_and_stays_close_to_float32(make_engine: Callable[..., LLMEngine]) -> None:
    engine = make_engine("llama", dtype="bfloat16")
    assert engine.model_runner.kv_cache.dtype == torch.bfloat16
    assert next(engine.model_runner.model.parameters()).dtype == torch.bfloat16
    out = engine.generate([[1, 2, 3, 4]], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    assert len(out[0]) == 4


def test_dtype_choice() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", torch.bfloat16, cpu) == torch.float32
    assert resolve_dtype("auto", torch.bfloat16, cuda) == torch.bfloat16
    assert resolve_dtype("float16", torch.float32, cpu) == torch.float16
    with pytest.raises(ValueError, match="dtype: expected one of auto"):
        resolve_dtype("int3", torch.float32, cpu)


def test_cli_reports_a_bad_model_dir_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["tollgate-engine", "serve", "--model", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert "not a directory" in capsys.readouterr().err


def test_llama3_rope_scaling_matches_transformers(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from local_engine.random_model import build_random_model

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dirs["llama"]))
    d = build_random_model(tmp_path / "llama31", "llama", shape={"rope_parameters": rope}, tokenizer=tokenizer)
    engine = LLMEngine(Config(str(d), num_kv_blocks=32, max_model_len=512))
    assert engine.config.hf_config.rope_scaling is not None
    prompt = [(i * 37) % 1000 + 3 for i in range(120)]
    hf = AutoModelForCausalLM.from_pretrained(str(d)).eval()
    hf.generation_config.eos_token_id = None
    with torch.inference_mode():
        expected = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, pad_token_id=0)
    got = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0]
    assert got == expected[0, len(prompt):].tolist()
