"""Tiny random models of real architectures, built once per session, and their HF twins."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from local_engine import Config, LLMEngine
from local_engine.random_model import build_random_model, build_tokenizer

FAMILIES = ["llama", "qwen2", "qwen3", "mistral"]


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> Iterator[None]:
    # the machines are small and shared: one thread is faster than two that contend
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    tokenizer = build_tokenizer(root / "tokenizer")
    return {
        family: build_random_model(root / family, family, tokenizer=tokenizer, seed=i)
        for i, family in enumerate(FAMILIES)
    }


@pytest.fixture(scope="session")
def hf_models(model_dirs: dict[str, Path]) -> Callable[[str], Any]:
    """The transformers implementation of each fixture model: the reference, loaded once."""
    from transformers import AutoModelForCausalLM

    cache: dict[str, Any] = {}

    def get(family: str) -> Any:
        if family not in cache:
            model = AutoModelForCausalLM.from_pretrained(str(model_dirs[family])).eval()
            # parity runs a fixed number of tokens: the engine side sets ignore_eos
            model.generation_config.eos_token_id = None
            cache[family] = model
        return cache[family]

    return get


@pytest.fixture(scope="session")
def hf_greedy(hf_models: Callable[[str], Any]) -> Callable[[str, list[int], int], list[int]]:
    """transformers `generate` greedy output, memoised per (family, prompt, length)."""
    from transformers import GenerationConfig

    cache: dict[tuple[str, tuple[int, ...], int], list[int]] = {}

    def run(family: str, prompt: list[int], max_new_tokens: int) -> list[int]:
        key = (family, tuple(prompt), max_new_tokens)
        if key not in cache:
            gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
            with torch.inference_mode():
                out = hf_models(family).generate(torch.tensor([prompt]), generation_config=gen)
            cache[key] = out[0, len(prompt) :].tolist()
        return cache[key]

    return run


@pytest.fixture
def make_engine(model_dirs: dict[str, Path]) -> Callable[..., LLMEngine]:
    def make(family: str = "llama", **overrides: Any) -> LLMEngine:
        settings: dict[str, Any] = {"num_kv_blocks": 256, "max_num_batched_tokens": 512, "max_model_len": 1024}
        settings.update(overrides)
        return LLMEngine(Config(str(model_dirs[family]), **settings))

    return make
