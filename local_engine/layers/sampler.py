"""Next-token choice for a batch: greedy, temperature, top-k, top-p, per-request seeds."""

from __future__ import annotations

import torch

from local_engine.sampling_params import SamplingParams


class Sampler:
    """Samples by the exponential race: argmax(p / E) with E ~ Exp(1) is a draw from p.

    It needs one random tensor and no cumulative sums. A request with a `seed` gets its
    own generator (kept across steps, keyed by sequence) so its output is reproducible
    whatever else shares the batch.
    """

    def __init__(self) -> None:
        self.generators: dict[int, torch.Generator] = {}

    def forget(self, seq_id: int) -> None:
        self.generators.pop(seq_id, None)

    def __call__(
        self, logits: torch.Tensor, params: list[SamplingParams], seq_ids: list[int]
    ) -> list[int]:  # logits: [S, V] float32
        greedy = logits.argmax(dim=-1)
        if all(p.greedy for p in params):
            return greedy.tolist()
        temps = torch.tensor([p.temperature if not p.greedy else 1.0 for p in params], device=logits.device)
        logits = logits / temps[:, None]
        if any(p.top_k > 0 or p.top_p < 1.0 for p in params):
            logits = _top_k_top_p(logits, params)
        probs = torch.softmax(logits, dim=-1)
        noise = torch.empty_like(probs)
        for row, (p, seq_id) in enumerate(zip(params, seq_ids, strict=True)):
            if p.seed is None:
                noise[row].exponential_()
                continue
            gen = self.generators.get(seq_id)
            if gen is None:
                gen = torch.Generator(device=logits.device).manual_seed(p.seed)
                self.generators[seq_id] = gen
            noise[row].exponential_(generator=gen)
        sampled = (probs / noise).argmax(dim=-1)
        is_greedy = torch.tensor([p.greedy for p in params], device=logits.device)
        return torch.where(is_greedy, greedy, sampled).tolist()


def _top_k_top_p(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    vocab = logits.shape[-1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # [S, V]
    ranks = torch.arange(vocab, device=logits.device)[None, :]
    top_k = torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params], device=logits.device)
    drop = ranks >= top_k[:, None]
    top_p = torch.tensor([p.top_p for p in params], device=logits.device)
    probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
    # drop a token when the mass strictly before it already reaches top_p (the first always stays)
    drop |= (probs.cumsum(dim=-1) - probs) >= top_p[:, None]
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)
