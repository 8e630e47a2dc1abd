"""FlexAttention reading the paged KV cache in place, for CUDA.

The reference path copies each sequence's context out of the cache every layer; this one
does not. The whole cache of a layer is one key sequence of num_blocks * block_size slots,
broadcast over the batch with a zero stride, and a BlockMask built straight from the block
tables lists, for each sequence, exactly its own KV blocks (one KV block of the mask = one
cache block). Inside those blocks `mask_mod` applies causality, mapping a physical slot back
to its logical position through a per-step `[B, num_blocks]` table.

On CPU it runs eagerly (tests check it against the reference path); on CUDA the kernel is
compiled once with dynamic shapes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from local_engine.layers.attention import AttentionMetadata, store_kv

Q_BLOCK = 128


class FlexAttention:
    name = "flex"

    def __init__(self, compile_kernel: bool | None = None) -> None:
        compile_kernel = torch.cuda.is_available() if compile_kernel is None else compile_kernel
        self._attend: Any = torch.compile(flex_attention, dynamic=True) if compile_kernel else flex_attention

    def prepare(self, meta: AttentionMetadata) -> None:
        device = meta.slot_mapping.device
        tables = meta.block_tables  # [B, max_blocks]
        b, max_blocks = tables.shape
        bs = meta.block_size
        tq = meta.max_query_len
        num_q_blocks = -(-tq // Q_BLOCK)
        q_offset = meta.context_lens - meta.query_lens  # [B] position of each sequence's first query
        # causality at block granularity: q block j needs KV up to its last query's position
        last_q = torch.minimum((torch.arange(num_q_blocks, device=device) + 1) * Q_BLOCK, meta.query_lens[:, None])
        kv_num = torch.clamp(-(-(q_offset[:, None] + last_q) // bs), min=1)  # [B, QB]
        kv_indices = tables[:, None, None, :].expand(b, 1, num_q_blocks, max_blocks).contiguous()
        num_cache_blocks = meta.num_cache_blocks
        logical = torch.full((b, int(num_cache_blocks)), -1, dtype=torch.long, device=device)
        logical.scatter_(1, tables, torch.arange(max_blocks, device=device).expand(b, max_blocks).contiguous())
        # padding entries of a block table repeat block 0; give it back its true logical index
        owned0 = (tables == 0).long().argmax(dim=1)
        has0 = (tables == 0).any(dim=1) & (owned0 < -(-meta.context_lens // bs))
        logical[:, 0] = torch.where(has0, owned0, logical[:, 0])
        window = meta.sliding_window

        def mask_mod(bi: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
            block = logical[bi, kv_idx // bs]
            kv_pos = block * bs + kv_idx % bs
            q_pos = q_offset[bi] + q_idx
            # the block list already limits each row to its own blocks; the eager path does
            # not use that list, so ownership is checked here too
            keep = (block >= 0) & (kv_pos <= q_pos)
            if window is not None:
                keep = keep & (kv_pos > q_pos - window)
            return keep

        meta.extra["block_mask"] = BlockMask.from_kv_blocks(
            kv_num.unsqueeze(1).to(torch.int32),
            kv_indices.to(torch.int32),
            BLOCK_SIZE=(Q_BLOCK, bs),
            mask_mod=mask_mod,
            seq_lengths=(tq, int(num_cache_blocks) * bs),
            compute_q_blocks=False,  # only the backward pass needs them
        )
        seq_idx = torch.repeat_interleave(torch.arange(b, device=device), meta.query_lens)
        starts = torch.cumsum(meta.query_lens, 0) - meta.query_lens
        meta.extra["pad_index"] = seq_idx * tq + torch.arange(seq_idx.numel(), device=device) - starts[seq_idx]

    def forward(
        self,
        q: torch.Tensor,  # [N, H, D]
        k: torch.Tensor,  # [N, Hkv, D]
        v: torch.Tensor,
        k_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        store_kv(k, v, k_cache, v_cache, meta.slot_mapping)
        _, h, d = q.shape
        b, tq = meta.block_tables.shape[0], meta.max_query_len
        q_pad = q.new_zeros(b * tq, h, d)
        q_pad[meta.extra["pad_index"]] = q
        q_pad = q_pad.view(b, tq, h, d).transpose(1, 2)  # [B, H, Tq, D]
        slots = k_cache.shape[0] * k_cache.shape[1]
        hkv = k_cache.shape[2]
        # [1, Hkv, S, D] broadcast to [B, Hkv, S, D] with a zero batch stride: no copy
        keys = k_cache.view(1, slots, hkv, d).transpose(1, 2).expand(b, -1, -1, -1)
        values = v_cache.view(1, slots, hkv, d).transpose(1, 2).expand(b, -1, -1, -1)
        out = self._attend(q_pad, keys, values, block_mask=meta.extra["block_mask"], enable_gqa=h != hkv)
        return out.transpose(1, 2).reshape(b * tq, h, d)[meta.extra["pad_index"]]  # [N, H, D]
