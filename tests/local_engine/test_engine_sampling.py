"""Sampling controls, stop conditions, and streaming detokenisation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from local_engine import CompletionOutput, LLMEngine, SamplingParams
from local_engine.errors import InvalidRequestError
from local_engine.layers.sampler import Sampler
from local_engine.tokenizer import IncrementalDetokenizer

PROMPT_TEXT = "def main():\n    args = parse()\n"


def _run(engine: LLMEngine, prompt: list[int], params: SamplingParams) -> list[CompletionOutput]:
    engine.add_request("r", prompt, params)
    outputs = []
    while engine.has_unfinished():
        outputs.extend(engine.step())
    return outputs


def _choice(outputs: list[CompletionOutput], index: int = 0) -> tuple[list[int], str, str | None]:
    mine = [o for o in outputs if o.index == index]
    tokens = [t for o in mine for t in o.token_ids]
    return tokens, "".join(o.text for o in mine), mine[-1].finish_reason


def test_seed_makes_sampling_reproducible(make_engine: Callable[..., LLMEngine]) -> None:
    engine = make_engine()
    prompt = engine.tokenizer.encode(PROMPT_TEXT)
    params = SamplingParams(temperature=1.0, seed=1234, max_tokens=20, ignore_eos=True)
    first = engine.generate([prompt], params)[0]
    # same seed, now sharing the batch with unrelated work: the same tokens
    other = SamplingParams(temperature=1.0, max_tokens=20, ignore_eos=True)
    again = engine.generate([prompt, prompt[:3]], [params, other])[0]
    assert first == again
    different = engine.generate([prompt], SamplingParams(temperature=1.0, seed=99, max_tokens=20, ignore_eos=True))
    assert different[0] != first


@pytest.mark.parametrize("params", [{"top_k": 1}, {"top_p": 1e-6}, {"temperature": 1e-4}])
def test_degenerate_sampling_equals_greedy(make_engine: Callable[..., LLMEngine], params: dict[str, float]) -> None:
    engine = make_engine()
    prompt = engine.tokenizer.encode(PROMPT_TEXT)
    greedy = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0]
    settings = {"temperature": 1.0, "seed": 5, "max_tokens": 12, "ignore_eos": True, **params}
    assert engine.generate([prompt], SamplingParams(**settings))[0] == greedy  # type: ignore[arg-type]


def test_top_k_and_top_p_restrict_the_candidates() -> None:
    sampler = Sampler()
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]] * 400))
    top_k = SamplingParams(temperature=1.0, top_k=2)
    drawn = set(sampler(logits, [top_k] * 400, list(range(400))))
    assert drawn == {0, 1}
    top_p = SamplingParams(temperature=1.0, top_p=0.65)  # 0.4 + 0.3 reaches it: two tokens stay
    assert set(sampler(logits, [top_p] * 400, list(range(400, 800)))) == {0, 1}


def test_n_choices_are_independent_and_reproducible(make_engine: Callable[..., LLMEngine]) -> None:
    engine = make_engine()
    prompt = engine.tokenizer.encode(PROMPT_TEXT)
    params = SamplingParams(temperature=1.0, seed=7, n=3, max_tokens=10, ignore_eos=True)
    outputs = _run(engine, prompt, params)
    choices = [_choice(outputs, i)[0] for i in range(3)]
    assert all(len(c) == 10 for c in choices)
    assert len({tuple(c) for c in choices}) == 3
    assert [_choice(_run(engine, prompt, params), i)[0] for i in range(3)] == choices


def test_max_tokens_finishes_with_length(make_engine: Callable[..., LLMEngine]) -> None:
    engine = make_engine()
    tokens, _, reason = _choice(_run(engine, [1, 2, 3], SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)))
    assert len(tokens) == 5 and reason == "length"


def test_stop_token_id_ends_the_choice_and_is_not_in_the_text(make_engine: Callable[..., LLMEngine]) -> None:
    engine = make_engine()
    prompt = engine.tokenizer.encode(PROMPT_TEXT)
    greedy = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0]
    stop_id = greedy[4]
    cut = greedy.index(stop_id)
    params = SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[stop_id], ignore_eos=True)
    tokens, text, reason = _choice(_run(engine, prompt, params))
    assert tokens == greedy[: cut + 1] and reason == "stop"
    assert text == engine.tokenizer.decode(greedy[:cut])


def test_stop_string_cuts_the_text_even_across_tokens(make_engine: Callable[..., LLMEngine]) -> None:
    engine = make_engine()
    prompt = engine.tokenizer.encode(PROMPT_TEXT)
    full = _choice(_run(engine, prompt, SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)))[1]
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    params = SamplingParams(temperature=0, max_tokens=20, stop=[stop], ignore_eos=True)
    outputs = _run(engine, prompt, params)
    _, text, reason = _choice(outputs)
    assert reason == "stop"
    assert text == full[: full.index(stop)]
    assert all(stop not in o.text for o in outputs)


def test_streaming_detokenisation_never_splits_a_character(make_engine: Callable[..., LLMEngine]) -> None:
    engine = make_engine()
    tokenizer = engine.tokenizer
    text = "naïve café — 日本語のテキスト 🙂🚀 ok"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) > len(text) // 2  # byte-level pieces: many characters span several tokens
    detok = IncrementalDetokenizer(tokenizer, [])
    deltas = [detok.push(t) for t in ids]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) + detok.flush() == text


def test_invalid_sampling_values_name_their_field() -> None:
    for kwargs, field in [
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -5}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"stop": [""]}, "stop"),
    ]:
        with pytest.raises(InvalidRequestError) as info:
            SamplingParams(**kwargs)  # type: ignore[arg-type]
        assert info.value.param == field
