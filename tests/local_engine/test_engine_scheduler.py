"""Continuous batching: decodes never stall, admission limits hold, finished work leaves."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from local_engine import LLMEngine, SamplingParams
from local_engine.errors import EngineOverloadedError, InvalidRequestError

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


def test_a_long_prompt_is_chunked_and_running_decodes_keep_going(make_engine: Callable[..., LLMEngine]) -> None:
    engine = make_engine(max_num_batched_tokens=32)
    engine.add_request("short", [5, 6, 7], SamplingParams(temperature=0, max_tokens=40, ignore_eos=True))
    engine.step()  # prefill of the short prompt; it now decodes
    engine.add_request("long", list(range(10, 210)), GREEDY)
    chunks = []
    while engine.scheduler.running and any(s.request_id == "long" and s.num_computed_tokens < 200
                                           for s in engine.scheduler.running + list(engine.scheduler.waiting)):
        batch = engine.scheduler.schedule()
        sizes = dict(zip([s.request_id for s in batch.seqs], batch.num_tokens, strict=True))
        assert sizes.get("short") == 1, "the decode was stalled"
        chunks.append(sizes.get("long", 0))
        sampled = engine.model_runner.run(batch.seqs, batch.num_tokens)
        for seq, n in zip(batch.seqs, batch.num_tokens, strict=True):
            seq.num_computed_tokens += n
            if seq.seq_id in sampled:
                seq.append_token(sampled[seq.seq_id])
    assert sum(chunks) == 200 and max(chunks) == 31


def test_admission_is_limited_by_max_num_seqs(make_engine: Callable[..., LLMEngine]) -> None:
    engine = make_engine(max_num_seqs=2)
    for i in range(5):
        engine.add_request(str(i), [1, 2, 3 + i], GREEDY)
    peak = 0
    while engine.has_unfinished():
        engine.step()
        peak = max(peak, len(engine.scheduler.running))
    assert peak == 2


def test_finished_sequences_leave_at_once_and_free_their_blocks(make_engine: Callable[..., LLMEngine]) -> None:
    engine = make_engine()
    engine.add_request("a", list(range(1, 40)), SamplingParams(temperature=0, max_tokens=1))
    engine.add_request("b", list(range(1, 40)), SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))
    outputs = engine.step()
    assert [o.request_id for o in outputs if o.finished] == ["a"]
    assert [s.request_id for s in engine.scheduler.running] == ["b"]
    engine.abort("b")
    assert not engine.has_unfinished()
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_queue_limit_refuses_new_requests(make_engine: Callable[..., LLMEngine]) -> None:
    engine = make_engine(max_waiting=2)
    engine.add_request("a", [1, 2], GREEDY)
    engine.add_request("b", [1, 2], GREEDY)
    with pytest.raises(EngineOverloadedError):
        engine.add_request("c", [1, 2], GREEDY)


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "param"),
    [([], 4, "prompt"), ([1] * 1024, 4, "prompt"), ([10**6], 4, "prompt"), ([1] * 10, 1000, "max_tokens")],
)
def test_requests_that_can_never_run_are_refused_up_front(
    make_engine: Callable[..., LLMEngine], prompt: list[int], max_tokens: int, param: str
) -> None:
    engine = make_engine(num_kv_blocks=32)  # 512 tokens of KV
    with pytest.raises(InvalidRequestError) as info:
        engine.add_request("x", prompt, SamplingParams(max_tokens=max_tokens))
    assert info.value.param == param
