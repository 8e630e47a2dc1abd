"""Our model code and engine against the transformers implementation of the same weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from local_engine import LLMEngine, SamplingParams
from local_engine.engine.sequence import Sequence

FAMILIES = ["llama", "qwen2", "qwen3", "mistral"]
GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)

TEXTS = [
    "import os\n",
    "def add(a, b):\n    return a + b\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n        self.items.append(x)\n",
    "for i in range(10):\n    if i % 2:\n        print(i, 'odd')\n    else:\n        print(i, 'even')\n" * 2,
]
SHARED_PREFIX = "\"\"\"A module docstring that many prompts share, long enough to span blocks.\"\"\"\n" * 3


def _prompts(engine: LLMEngine) -> list[list[int]]:
    return [engine.tokenizer.encode(t) for t in TEXTS]


def _shared_prefix_prompts(engine: LLMEngine) -> list[list[int]]:
    return [engine.tokenizer.encode(SHARED_PREFIX + t) for t in TEXTS]


def _check(
    engine: LLMEngine, family: str, prompts: list[list[int]], outputs: list[list[int]], hf_greedy: Callable[..., Any]
) -> None:
    for prompt, output in zip(prompts, outputs, strict=True):
        assert output == hf_greedy(family, prompt, GREEDY.max_tokens), f"prompt of {len(prompt)} tokens"


@pytest.mark.parametrize("family", FAMILIES)
def test_prefill_and_decode_logits_match_transformers(
    family: str, make_engine: Callable[..., LLMEngine], hf_models: Callable[[str], Any]
) -> None:
    engine = make_engine(family)
    runner, bm = engine.model_runner, engine.block_manager
    prompts = _prompts(engine)[1:3]
    seqs = [Sequence(list(p), GREEDY) for p in prompts]
    for seq in seqs:
        assert bm.allocate_slots(seq, len(seq) + 1)
    # step 1: both prompts in one batch, split into two chunks for the second
    first = [len(seqs[0]), 5]
    logits = runner.logits_for(seqs, first)
    seqs[0].num_computed_tokens, seqs[1].num_computed_tokens = first
    rest = runner.logits_for([seqs[1]], [len(seqs[1]) - 5])
    seqs[1].num_computed_tokens = len(seqs[1])
    # step 2: one decode token each, attending to the cached context
    for seq in seqs:
        seq.append_token(7)
    decode = runner.logits_for(seqs, [1, 1])
    hf = hf_models(family)
    with torch.inference_mode():
        ref0 = hf(torch.tensor([seqs[0].token_ids])).logits[0]
        ref1 = hf(torch.tensor([seqs[1].token_ids])).logits[0]
    n0 = len(prompts[0])
    torch.testing.assert_close(logits[:n0], ref0[:n0], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cat([logits[n0:], rest]), ref1[:-1], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(decode, torch.stack([ref0[-1], ref1[-1]]), atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_batch_matches_generate(
    family: str, make_engine: Callable[..., LLMEngine], hf_greedy: Callable[..., Any]
) -> None:
    engine = make_engine(family, enable_prefix_caching=False)
    prompts = _prompts(engine)
    _check(engine, family, prompts, engine.generate(prompts, GREEDY), hf_greedy)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_with_prefix_cache_hits_matches_generate(
    family: str, make_engine: Callable[..., LLMEngine], hf_greedy: Callable[..., Any]
) -> None:
    engine = make_engine(family)
    prompts = _shared_prefix_prompts(engine)
    outputs = [engine.generate([p], GREEDY)[0] for p in prompts]  # one by one: later ones hit
    assert engine.block_manager.prefix_hit_tokens >= 3 * 16
    again = engine.generate(prompts, GREEDY)  # a second round hits the whole prompts
    _check(engine, family, prompts, outputs, hf_greedy)
    assert again == outputs


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_with_staggered_arrivals_and_chunked_prefill(
    family: str, make_engine: Callable[..., LLMEngine], hf_greedy: Callable[..., Any]
) -> None:
    # a 7-token budget forces every prompt into chunks, prefilled beside running decodes
    engine = make_engine(family, max_num_batched_tokens=7)
    prompts = _shared_prefix_prompts(engine) + _prompts(engine)
    pending = list(enumerate(prompts))
    outputs: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
    steps = 0
    while pending or engine.has_unfinished():
        if pending and steps % 5 == 0:  # a new request joins every fifth step
            i, prompt = pending.pop(0)
            engine.add_request(str(i), prompt, GREEDY)
        for out in engine.step():
            outputs[int(out.request_id)].extend(out.token_ids)
        steps += 1
    _check(engine, family, prompts, [outputs[i] for i in range(len(prompts))], hf_greedy)
    assert engine.block_manager.prefix_hit_tokens > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_under_preemption_matches_generate(
    family: str, make_engine: Callable[..., LLMEngine], hf_greedy: Callable[..., Any]
) -> None:
    # 10 blocks of 16 tokens cannot hold four sequences of 30-110 tokens at once
    engine = make_engine(family, num_kv_blocks=10, max_num_batched_tokens=64)
    prompts = _prompts(engine)
    outputs = engine.generate(prompts, GREEDY)
    assert engine.scheduler.num_preemptions > 0
    _check(engine, family, prompts, outputs, hf_greedy)
    assert engine.block_manager.num_free_blocks == 10


@pytest.mark.filterwarnings("ignore::UserWarning")  # flex_attention warns when run uncompiled
def test_flex_backend_matches_the_reference_path(
    make_engine: Callable[..., LLMEngine], hf_greedy: Callable[..., Any]
) -> None:
    # the CUDA fast path, run eagerly on CPU: same paged block lists and masks, no kernel
    from local_engine.layers.flex_attention import FlexAttention

    engine = make_engine("qwen3", max_num_batched_tokens=16, num_kv_blocks=40)
    engine.model_runner.backend = FlexAttention(compile_kernel=False)
    prompts = _shared_prefix_prompts(engine)[:2] + _prompts(engine)[:2]
    outputs = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    for prompt, output in zip(prompts, outputs, strict=True):
        assert output == hf_greedy("qwen3", prompt, 24)[:8]
    assert engine.model_runner.backend.name == "flex"
