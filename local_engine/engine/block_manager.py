"""Paged KV-cache bookkeeping: which physical blocks each sequence owns, and the prefix cache.

A block holds `block_size` consecutive tokens of one sequence. Once a block is full and its
keys and values have been computed, it is registered under a chained hash
`h_i = H(h_{i-1}, tokens of block i)` whose root `h_{-1} = H(tenant salt)`: equal hashes mean
an equal salt and an equal token prefix, so a later sequence can adopt the block instead of
recomputing it, and two tenants never share one. Blocks whose reference count drops to zero
keep their hash and go to the back of an LRU free list; a new allocation takes the front
(the least recently freed) and only then forgets its hash.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass

from local_engine.engine.sequence import Sequence


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    block_hash: int | None = None


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "little")


def root_hash(salt: str) -> int:
    return _digest(b"tollgate-salt:" + salt.encode())


def chain_hash(parent: int, token_ids: list[int]) -> int:
    return _digest(parent.to_bytes(16, "little") + array("q", token_ids).tobytes())


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # insertion order is LRU order: the front was freed longest ago
        self.free_block_ids: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.hash_to_block_id: dict[int, int] = {}
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _block_hashes(self, seq: Sequence, num_full_blocks: int) -> list[int]:
        """Chained hashes of the first `num_full_blocks` blocks, memoised on the sequence."""
        hashes = seq.block_hashes
        bs = self.block_size
        while len(hashes) < num_full_blocks:
            i = len(hashes)
            parent = hashes[-1] if hashes else root_hash(seq.cache_salt)
            hashes.append(chain_hash(parent, seq.token_ids[i * bs : (i + 1) * bs]))
        return hashes[:num_full_blocks]

    def match_prefix(self, seq: Sequence) -> list[int]:
        """Cached blocks that hold a prefix of `seq`. At least one token is always left to
        compute, because the last prompt position must run to produce logits."""
        if not self.enable_prefix_caching:
            return []
        hits: list[int] = []
        for block_hash in self._block_hashes(seq, (len(seq) - 1) // self.block_size):
            block_id = self.hash_to_block_id.get(block_hash)
            if block_id is None:
                break
            hits.append(block_id)
        return hits

    def num_free_after_adopting(self, block_ids: list[int]) -> int:
        """Free blocks left once `block_ids` are adopted (adopting a free cached block uses it up)."""
        return self.num_free_blocks - sum(1 for b in block_ids if self.blocks[b].ref_count == 0)

    def adopt_prefix(self, seq: Sequence, block_ids: list[int]) -> None:
        assert not seq.block_table and seq.num_computed_tokens == 0
        for block_id in block_ids:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free_block_ids[block_id]
            block.ref_count += 1
            seq.block_table.append(block_id)
        seq.num_computed_tokens = len(block_ids) * self.block_size
        seq.num_hashed_blocks = len(block_ids)
        self.prefix_query_tokens += len(seq)
        self.prefix_hit_tokens += seq.num_computed_tokens

    def num_new_blocks(self, seq: Sequence, num_new_tokens: int) -> int:
        needed = self.blocks_for(seq.num_computed_tokens + num_new_tokens)
        return max(0, needed - len(seq.block_table))

    def allocate_slots(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Give `seq` blocks for its next `num_new_tokens` tokens; False if too few are free."""
        needed = self.num_new_blocks(seq, num_new_tokens)
        if needed > self.num_free_blocks:
            return False
        for _ in range(needed):
            block_id, _ = self.free_block_ids.popitem(last=False)
            block = self.blocks[block_id]
            if block.block_hash is not None:  # evict its cached content
                if self.hash_to_block_id.get(block.block_hash) == block_id:
                    del self.hash_to_block_id[block.block_hash]
                block.block_hash = None
            block.ref_count = 1
            seq.block_table.append(block_id)
        return True

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register the blocks that became full and computed during the last step."""
        if not self.enable_prefix_caching:
            return
        num_full = seq.num_computed_tokens // self.block_size
        if num_full <= seq.num_hashed_blocks:
            return
        hashes = self._block_hashes(seq, num_full)
        for i in range(seq.num_hashed_blocks, num_full):
            block = self.blocks[seq.block_table[i]]
            # a concurrent sequence may have computed the same prefix first: keep its copy
            if block.block_hash is None and hashes[i] not in self.hash_to_block_id:
                block.block_hash = hashes[i]
                self.hash_to_block_id[hashes[i]] = block.block_id
        seq.num_hashed_blocks = num_full

    def free(self, seq: Sequence) -> None:
        # Tail blocks are freed first so they sit nearer the LRU front and are evicted
        # before the shared prefix blocks at the head of the table.
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_block_ids[block_id] = None
        seq.block_table.clear()
        seq.num_computed_tokens = 0
        seq.num_hashed_blocks = 0

    def reset_prefix_cache(self) -> None:
        for block in self.blocks:
            block.block_hash = None
        self.hash_to_block_id.clear()
