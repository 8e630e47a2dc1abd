"""The step loop: admit requests, schedule, run the model, turn tokens into text deltas."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from local_engine.config import Config
from local_engine.engine.block_manager import BlockManager
from local_engine.engine.model_runner import ModelRunner
from local_engine.engine.scheduler import Scheduler
from local_engine.engine.sequence import Sequence
from local_engine.errors import EngineOverloadedError, InvalidRequestError
from local_engine.sampling_params import SamplingParams
from local_engine.tokenizer import TextStream, Tokenizer


@dataclass(slots=True)
class CompletionOutput:
    """What one step added to one choice of a request."""

    request_id: str
    index: int
    text: str  # new text since the last output
    token_ids: list[int]  # new tokens since the last output
    finished: bool
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


@dataclass(slots=True)
class EngineStats:
    requests_finished: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    steps: int = 0
    finish_reasons: dict[str, int] = field(default_factory=dict)


class LLMEngine:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.tokenizer = Tokenizer(Path(config.model))
        self.model_runner = ModelRunner(config)
        self.block_manager = BlockManager(
            self.model_runner.num_blocks, config.block_size, config.enable_prefix_caching
        )
        self.scheduler = Scheduler(config, self.block_manager)
        eos = set(config.hf_config.eos_token_ids)
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_token_ids = eos
        self.vocab_size = config.hf_config.vocab_size
        self.requests: dict[str, list[Sequence]] = {}
        self.streams: dict[int, TextStream] = {}
        self.stats = EngineStats()

    def add_request(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, cache_salt: str = ""
    ) -> None:
        if request_id in self.requests:
            raise InvalidRequestError(f"duplicate request id {request_id!r}")
        if not prompt_token_ids:
            raise InvalidRequestError("the prompt is empty", "prompt")
        if min(prompt_token_ids) < 0 or max(prompt_token_ids) >= self.vocab_size:
            raise InvalidRequestError("the prompt holds a token id outside the vocabulary", "prompt")
        max_len = self.config.max_model_len
        if len(prompt_token_ids) >= max_len:
            raise InvalidRequestError(
                f"the prompt has {len(prompt_token_ids)} tokens; this model's limit is {max_len}", "prompt"
            )
        worst = min(len(prompt_token_ids) + params.max_tokens, max_len)
        if self.block_manager.blocks_for(worst) > self.block_manager.num_blocks:
            raise InvalidRequestError("prompt plus max_tokens exceeds the KV cache", "max_tokens")
        if len(self.scheduler.waiting) + params.n > self.config.max_waiting:
            raise EngineOverloadedError("too many queued requests")
        seqs = []
        for i in range(params.n):
            choice_params = params
            if params.seed is not None and i:
                choice_params = dataclasses.replace(params, seed=params.seed + i)
            seq = Sequence(list(prompt_token_ids), choice_params, request_id, i, cache_salt)
            self.streams[seq.seq_id] = TextStream(self.tokenizer, prompt_token_ids, params.stop)
            self.scheduler.add(seq)
            seqs.append(seq)
        self.requests[request_id] = seqs
        self.stats.prompt_tokens += len(prompt_token_ids) * params.n

    def abort(self, request_id: str) -> None:
        for seq in self.requests.pop(request_id, []):
            self._finish(seq, "abort")

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[CompletionOutput]:
        batch = self.scheduler.schedule()
        if not batch.seqs:
            return []
        sampled = self.model_runner.run(batch.seqs, batch.num_tokens)
        self.stats.steps += 1
        now = time.monotonic()
        outputs = []
        for seq, n in zip(batch.seqs, batch.num_tokens, strict=True):
            seq.num_computed_tokens += n
            self.block_manager.cache_full_blocks(seq)
            token = sampled.get(seq.seq_id)
            if token is None:
                continue
            seq.append_token(token)
            if seq.first_token_time is None:
                seq.first_token_time = now
            outputs.append(self._postprocess(seq, token))
        return outputs

    def _postprocess(self, seq: Sequence, token: int) -> CompletionOutput:
        params = seq.params
        stream = self.streams[seq.seq_id]
        self.stats.generation_tokens += 1
        reason = None
        if token in params.stop_token_ids or (token in self.eos_token_ids and not params.ignore_eos):
            reason = "stop"  # the stop token itself is not part of the text
        elif stream.push(token):
            reason = "stop"
        elif seq.num_completion_tokens >= params.max_tokens or len(seq) >= self.config.max_model_len:
            reason = "length"
        if reason is not None:
            self._finish(seq, reason)
        return CompletionOutput(
            request_id=seq.request_id,
            index=seq.index,
            text=stream.take(final=reason is not None),
            token_ids=[token],
            finished=reason is not None,
            finish_reason=reason,
            prompt_tokens=seq.num_prompt_tokens,
            completion_tokens=seq.num_completion_tokens,
            cached_tokens=seq.num_cached_tokens,
        )

    def _finish(self, seq: Sequence, reason: str) -> None:
        self.scheduler.finish(seq, reason)
        self.model_runner.sampler.forget(seq.seq_id)
        self.streams.pop(seq.seq_id, None)
        choices = self.requests.get(seq.request_id, [])
        if all(s.is_finished for s in choices):
            self.requests.pop(seq.request_id, None)
        if reason != "abort":
            self.stats.requests_finished += 1
            self.stats.finish_reasons[reason] = self.stats.finish_reasons.get(reason, 0) + 1

    def generate(
        self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams], cache_salt: str = ""
    ) -> list[list[int]]:
        """Run prompts to completion; the completion token ids of each (first choice)."""
        param_list = params if isinstance(params, list) else [params] * len(prompts)
        ids = [f"gen-{time.monotonic_ns()}-{i}" for i in range(len(prompts))]
        results: dict[str, list[int]] = {rid: [] for rid in ids}
        for rid, prompt, p in zip(ids, prompts, param_list, strict=True):
            self.add_request(rid, prompt, p, cache_salt)
        while self.has_unfinished():
            for out in self.step():
                if out.index == 0:
                    results[out.request_id].extend(out.token_ids)
        return [results[rid] for rid in ids]
