"""Attention over the paged KV cache, behind one interface.

The model flattens every scheduled token of every sequence into one stream of N tokens.
Each layer writes the new keys and values into the cache at `slot_mapping` (slot =
block_id * block_size + offset), then attends from the new queries to the sequence's whole
context, read back through its block table. A backend decides how that read happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F


@dataclass(slots=True)
class AttentionMetadata:
    """What one step's attention needs, built once per step by the model runner."""

    slot_mapping: torch.Tensor  # [N] cache slot of each new token
    block_tables: torch.Tensor  # [B, max_blocks] physical block ids, padded with 0
    context_lens: torch.Tensor  # [B] tokens in cache after this step (computed + new)
    query_lens: torch.Tensor  # [B] new tokens per sequence
    query_lens_list: list[int]
    context_lens_list: list[int]
    max_query_len: int
    max_context_len: int
    block_size: int
    num_cache_blocks: int
    sliding_window: int | None = None
    # backend-specific per-step state, filled by AttentionBackend.prepare
    extra: dict[str, Any] = field(default_factory=dict)


class AttentionBackend(Protocol):
    name: str

    def prepare(self, meta: AttentionMetadata) -> None:
        """Precompute per-step tensors shared by all layers."""

    def forward(
        self,
        q: torch.Tensor,  # [N, H, D]
        k: torch.Tensor,  # [N, Hkv, D]
        v: torch.Tensor,  # [N, Hkv, D]
        k_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # [N, H, D]
        ...


def store_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor
) -> None:
    hkv, d = k.shape[1], k.shape[2]
    k_cache.view(-1, hkv, d).index_copy_(0, slots, k)
    v_cache.view(-1, hkv, d).index_copy_(0, slots, v)


def gather_kv(cache: torch.Tensor, block_tables: torch.Tensor) -> torch.Tensor:
    """[num_blocks, bs, Hkv, D] -> [B, Hkv, max_blocks * bs, D], each sequence's context in order."""
    b, nb = block_tables.shape
    _, bs, hkv, d = cache.shape
    return cache[block_tables].view(b, nb * bs, hkv, d).transpose(1, 2)


class ReferenceAttention:
    """torch SDPA on gathered context; runs anywhere, and is the engine's attention on CPU.

    Decodes (one query each) share one batched call over their gathered contexts with a
    `[B, 1, 1, Tk]` padding mask. Each prefill chunk gets its own call: a chunk with no
    earlier context attends to its own new keys with `is_causal` (the fast kernel, no mask);
    a chunk that continues a cached context gathers it and uses a bottom-right causal mask.
    """

    name = "reference"

    def prepare(self, meta: AttentionMetadata) -> None:
        device = meta.slot_mapping.device
        q_lens, ctx_lens = meta.query_lens_list, meta.context_lens_list
        starts = [0]
        for n in q_lens:
            starts.append(starts[-1] + n)
        decodes = [i for i, n in enumerate(q_lens) if n == 1]
        if decodes:
            rows = torch.tensor(decodes, device=device)
            nb = -(-max(ctx_lens[i] for i in decodes) // meta.block_size)
            k_pos = torch.arange(nb * meta.block_size, device=device)
            mask = k_pos[None, :] < meta.context_lens[rows][:, None]  # [Bd, Tk]
            if meta.sliding_window is not None:
                mask &= k_pos[None, :] >= meta.context_lens[rows][:, None] - meta.sliding_window
            meta.extra["decode_tokens"] = torch.tensor([starts[i] for i in decodes], device=device)
            meta.extra["decode_tables"] = meta.block_tables[rows, :nb]
            meta.extra["decode_mask"] = mask[:, None, None, :]  # [Bd, 1, 1, Tk]
        prefills = []
        for i, n in enumerate(q_lens):
            if n == 1:
                continue
            ctx = ctx_lens[i]
            window = meta.sliding_window
            mask = None
            if ctx != n or (window is not None and ctx > window):
                q_pos = torch.arange(ctx - n, ctx, device=device)[:, None]
                k_pos = torch.arange(ctx, device=device)[None, :]
                mask = k_pos <= q_pos  # [T, ctx], causal aligned to the bottom right
                if window is not None:
                    mask &= k_pos > q_pos - window
            table = meta.block_tables[i, : -(-ctx // meta.block_size)]
            prefills.append((starts[i], starts[i] + n, ctx, table, mask))
        meta.extra["prefills"] = prefills

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        store_kv(k, v, k_cache, v_cache, meta.slot_mapping)
        h, hkv = q.shape[1], k.shape[1]
        gqa = h != hkv
        out = torch.empty_like(q)
        if "decode_tokens" in meta.extra:
            idx = meta.extra["decode_tokens"]
            tables = meta.extra["decode_tables"]
            q_d = q[idx][:, :, None, :]  # [Bd, H, 1, D]
            keys, values = gather_kv(k_cache, tables), gather_kv(v_cache, tables)  # [Bd, Hkv, Tk, D]
            o = F.scaled_dot_product_attention(q_d, keys, values, attn_mask=meta.extra["decode_mask"], enable_gqa=gqa)
            out[idx] = o[:, :, 0, :]
        for start, end, ctx, table, mask in meta.extra["prefills"]:
            q_p = q[start:end].transpose(0, 1)[None]  # [1, H, T, D]
            if mask is None:  # no earlier context: the new keys are the whole context
                keys = k[start:end].transpose(0, 1)[None]  # [1, Hkv, T, D]
                values = v[start:end].transpose(0, 1)[None]
                o = F.scaled_dot_product_attention(q_p, keys, values, is_causal=True, enable_gqa=gqa)
            else:
                keys = gather_kv(k_cache, table[None])[:, :, :ctx]  # [1, Hkv, ctx, D]
                values = gather_kv(v_cache, table[None])[:, :, :ctx]
                o = F.scaled_dot_product_attention(q_p, keys, values, attn_mask=mask, enable_gqa=gqa)
            out[start:end] = o[0].transpose(0, 1)
        return out


def select_backend(name: str, device: torch.device) -> AttentionBackend:
    """`auto`: FlexAttention on CUDA when it imports, else the reference path."""
    if name == "reference" or (name == "auto" and device.type != "cuda"):
        return ReferenceAttention()
    if name not in ("auto", "flex"):
        raise ValueError(f"attention_backend: expected auto, reference or flex; got {name!r}")
    try:
        from local_engine.layers.flex_attention import FlexAttention
    except ImportError:
        if name == "flex":
            raise
        return ReferenceAttention()
    return FlexAttention()
