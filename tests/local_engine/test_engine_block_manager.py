"""Paged KV bookkeeping: chained, tenant-salted prefix hashes, reference counts, LRU reuse."""

from __future__ import annotations

from local_engine import SamplingParams
from local_engine.engine.block_manager import BlockManager, chain_hash, root_hash
from local_engine.engine.sequence import Sequence

PARAMS = SamplingParams(temperature=0)


def _computed(bm: BlockManager, tokens: list[int], salt: str = "") -> Sequence:
    """A sequence whose whole prompt has been prefilled (as after one engine step)."""
    seq = Sequence(list(tokens), PARAMS, cache_salt=salt)
    bm.adopt_prefix(seq, bm.match_prefix(seq))
    assert bm.allocate_slots(seq, len(seq) - seq.num_computed_tokens)
    seq.num_computed_tokens = len(seq)
    bm.cache_full_blocks(seq)
    return seq


def test_hash_chains_each_block_to_its_whole_prefix_and_to_the_salt() -> None:
    a = chain_hash(root_hash(""), list(range(16)))
    assert chain_hash(a, [1] * 16) != chain_hash(chain_hash(root_hash(""), list(range(1, 17))), [1] * 16)
    assert root_hash("team-a") != root_hash("team-b")
    assert chain_hash(root_hash("team-a"), [5] * 16) != chain_hash(root_hash("team-b"), [5] * 16)


def test_same_prefix_same_tenant_shares_blocks() -> None:
    bm = BlockManager(num_blocks=8, block_size=16)
    first = _computed(bm, list(range(40)))
    second = Sequence([*range(40), 99], PARAMS)
    hits = bm.match_prefix(second)
    assert hits == first.block_table[:2]  # two full blocks; the partial third is never shared
    bm.adopt_prefix(second, hits)
    assert second.num_computed_tokens == 32
    assert all(bm.blocks[b].ref_count == 2 for b in hits)


def test_tenants_never_share_kv() -> None:
    bm = BlockManager(num_blocks=8, block_size=16)
    _computed(bm, list(range(40)), salt="team-a")
    assert bm.match_prefix(Sequence(list(range(40)), PARAMS, cache_salt="team-b")) == []
    assert bm.match_prefix(Sequence(list(range(40)), PARAMS)) == []
    assert len(bm.match_prefix(Sequence(list(range(40)), PARAMS, cache_salt="team-a"))) == 2


def test_the_last_prompt_token_is_always_recomputed() -> None:
    bm = BlockManager(num_blocks=8, block_size=16)
    _computed(bm, list(range(32)))
    # a fully cached 32-token prompt still runs its last block to get logits
    assert len(bm.match_prefix(Sequence(list(range(32)), PARAMS))) == 1
    assert len(bm.match_prefix(Sequence(list(range(33)), PARAMS))) == 2


def test_blocks_are_cached_only_once_computed() -> None:
    bm = BlockManager(num_blocks=8, block_size=16)
    seq = Sequence(list(range(40)), PARAMS)
    assert bm.allocate_slots(seq, 40)
    seq.num_computed_tokens = 20  # one chunk of a prefill: only block 0 is complete
    bm.cache_full_blocks(seq)
    assert len(bm.match_prefix(Sequence(list(range(40)), PARAMS))) == 1


def test_freed_blocks_stay_cached_and_are_evicted_least_recently_used_first() -> None:
    bm = BlockManager(num_blocks=4, block_size=16)
    old = _computed(bm, [1] * 33)  # 3 blocks
    old_blocks = list(old.block_table)
    bm.free(old)
    assert bm.num_free_blocks == 4
    # still reusable after free
    assert bm.match_prefix(Sequence([1] * 33, PARAMS)) == old_blocks[:2]
    # a new 2-block sequence takes the never-used block first, then the old tail block
    new = Sequence([7] * 20, PARAMS)
    assert bm.allocate_slots(new, 20)
    assert new.block_table[0] not in old_blocks
    assert new.block_table[1] == old_blocks[2]
    assert bm.match_prefix(Sequence([1] * 33, PARAMS)) == old_blocks[:2]  # the prefix survived


def test_reusing_a_free_cached_block_takes_it_off_the_free_list() -> None:
    bm = BlockManager(num_blocks=4, block_size=16)
    seq = _computed(bm, [3] * 20)
    bm.free(seq)
    again = Sequence([3] * 20, PARAMS)
    hits = bm.match_prefix(again)
    assert bm.num_free_after_adopting(hits) == 3
    bm.adopt_prefix(again, hits)
    assert bm.num_free_blocks == 3
    assert bm.prefix_hit_tokens == 16


def test_allocation_fails_cleanly_when_blocks_run_out() -> None:
    bm = BlockManager(num_blocks=2, block_size=16)
    seq = Sequence([1] * 40, PARAMS)
    assert not bm.allocate_slots(seq, 40)
    assert seq.block_table == [] and bm.num_free_blocks == 2


def test_prefix_caching_off_never_hits() -> None:
    bm = BlockManager(num_blocks=8, block_size=16, enable_prefix_caching=False)
    _computed(bm, list(range(40)))
    assert bm.match_prefix(Sequence(list(range(40)), PARAMS)) == []
