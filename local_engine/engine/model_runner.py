"""Owns the model weights and the KV cache; turns a scheduled batch into sampled tokens."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from local_engine.config import Config
from local_engine.engine.sequence import Sequence
from local_engine.layers.attention import AttentionMetadata, ReferenceAttention, select_backend
from local_engine.layers.sampler import Sampler
from local_engine.loader import load_model

_GIB = 1 << 30
log = logging.getLogger("local_engine")


class ModelRunner:
    def __init__(self, config: Config) -> None:
        self.config = config
        cfg = config.hf_config
        self.device = config.torch_device
        self.dtype = config.torch_dtype
        self.block_size = config.block_size
        self.model = load_model(Path(config.model), cfg, self.dtype, self.device, config.max_model_len)
        self.backend = select_backend(config.attention_backend, self.device)
        self.sampler = Sampler()
        self.num_blocks = config.num_kv_blocks or self._blocks_that_fit()
        # [2, layers, blocks, block_size, Hkv, D]; zeros so padded reads are finite
        self.kv_cache = torch.zeros(
            2, cfg.num_hidden_layers, self.num_blocks, self.block_size, cfg.num_key_value_heads,
            cfg.head_dim, dtype=self.dtype, device=self.device,
        )
        self.kv_caches = [(self.kv_cache[0, i], self.kv_cache[1, i]) for i in range(cfg.num_hidden_layers)]

    @property
    def block_bytes(self) -> int:
        cfg = self.config.hf_config
        per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim
        return per_token * self.block_size * self.dtype.itemsize

    def _blocks_that_fit(self) -> int:
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            used = total - free
            budget = total * self.config.gpu_memory_utilization - used - 2 * _GIB  # activations
        else:
            budget = self.config.cpu_kv_cache_gb * _GIB
        # more blocks than every admitted sequence at full length could use is waste
        useful = self.config.max_num_seqs * -(-self.config.max_model_len // self.block_size)
        return max(16, min(useful, int(budget // self.block_bytes)))

    @torch.inference_mode()
    def run(self, seqs: list[Sequence], num_tokens: list[int]) -> dict[int, int]:
        """Run one step; returns the sampled token of each sequence that reached its end."""
        hidden = self._forward(seqs, num_tokens)  # [N, hidden]
        rows: list[int] = []
        sample_seqs: list[Sequence] = []
        end = 0
        for seq, n in zip(seqs, num_tokens, strict=True):
            end += n
            if seq.num_computed_tokens + n == len(seq):  # the chunk reaches the last token
                rows.append(end - 1)
                sample_seqs.append(seq)
        if not rows:
            return {}
        logits = self.model.compute_logits(hidden[torch.tensor(rows, device=self.device)])  # [S, V]
        tokens = self.sampler(logits, [s.params for s in sample_seqs], [s.seq_id for s in sample_seqs])
        return {seq.seq_id: tok for seq, tok in zip(sample_seqs, tokens, strict=True)}

    @torch.inference_mode()
    def logits_for(self, seqs: list[Sequence], num_tokens: list[int]) -> torch.Tensor:
        """Logits at every new position of one step (parity tests compare them with HF)."""
        return self.model.compute_logits(self._forward(seqs, num_tokens))  # [N, V]

    def _forward(self, seqs: list[Sequence], num_tokens: list[int]) -> torch.Tensor:
        input_ids: list[int] = []
        positions: list[int] = []
        seq_lens: list[int] = []
        for seq, n in zip(seqs, num_tokens, strict=True):
            start = seq.num_computed_tokens
            input_ids.extend(seq.token_ids[start : start + n])
            positions.extend(range(start, start + n))
            seq_lens.append(start + n)
        ids = torch.tensor(input_ids, device=self.device)
        pos = torch.tensor(positions, device=self.device)
        try:
            meta = self._metadata(seqs, num_tokens, seq_lens, positions)
            return self.model(ids, pos, self.kv_caches, meta, self.backend)  # [N, hidden]
        except Exception:
            if isinstance(self.backend, ReferenceAttention):
                raise
            # a fast path that fails (a kernel that will not compile here) must not take the
            # server down; rerunning is safe because writing the same KV again is idempotent
            log.exception("attention backend %r failed; falling back to the reference path", self.backend.name)
            self.backend = ReferenceAttention()
            meta = self._metadata(seqs, num_tokens, seq_lens, positions)
            return self.model(ids, pos, self.kv_caches, meta, self.backend)

    def _metadata(
        self, seqs: list[Sequence], num_tokens: list[int], seq_lens: list[int], positions: list[int]
    ) -> AttentionMetadata:
        max_blocks = max(len(s.block_table) for s in seqs)
        tables = torch.tensor(
            [s.block_table + [0] * (max_blocks - len(s.block_table)) for s in seqs], dtype=torch.long
        )  # [B, max_blocks]
        query_lens = torch.tensor(num_tokens, dtype=torch.long)
        pos = torch.tensor(positions, dtype=torch.long)
        seq_idx = torch.repeat_interleave(torch.arange(len(seqs)), query_lens)
        slots = tables[seq_idx, pos // self.block_size] * self.block_size + pos % self.block_size
        meta = AttentionMetadata(
            slot_mapping=slots.to(self.device),
            block_tables=tables.to(self.device),
            context_lens=torch.tensor(seq_lens, dtype=torch.long, device=self.device),
            query_lens=query_lens.to(self.device),
            query_lens_list=list(num_tokens),
            context_lens_list=list(seq_lens),
            max_query_len=max(num_tokens),
            max_context_len=max(seq_lens),
            block_size=self.block_size,
            num_cache_blocks=self.num_blocks,
            sliding_window=self.config.hf_config.sliding_window,
        )
        self.backend.prepare(meta)
        return meta
