"""Continuous batching: which sequences run in the next step, and with how many tokens each.

Every step has a token budget (`max_num_batched_tokens`). Running sequences that decode
(one token each) are scheduled first, so a long prompt never stalls them; then unfinished
prefills take what is left as a chunk; then waiting sequences are admitted, first come
first served, while the budget, `max_num_seqs` and free KV blocks allow. When a running
sequence needs a block and none is free, the most recently arrived sequence not yet in
this step is preempted: its blocks are freed and it goes back to the head of the queue,
to be recomputed (its prefix blocks often survive in the prefix cache).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from local_engine.config import Config
from local_engine.engine.block_manager import BlockManager
from local_engine.engine.sequence import Sequence, SequenceStatus


@dataclass(slots=True)
class ScheduledBatch:
    seqs: list[Sequence] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)  # tokens computed this step, per seq
    preempted: list[Sequence] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seqs)


class Scheduler:
    def __init__(self, config: Config, block_manager: BlockManager) -> None:
        self.max_num_seqs = config.max_num_seqs
        self.max_num_batched_tokens = config.max_num_batched_tokens
        self.block_manager = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        # keep a few blocks back at admission so running decodes rarely need preemption
        self.watermark_blocks = max(1, block_manager.num_blocks // 100)
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        in_batch: set[int] = set()
        # decodes first, then chunks of prompts still being prefilled, oldest first
        order = sorted(self.running, key=lambda s: (len(s) - s.num_computed_tokens > 1, s.arrival_time))
        for seq in order:
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:  # preempted earlier in this loop
                continue
            num_new = min(len(seq) - seq.num_computed_tokens, budget)
            while not self.block_manager.allocate_slots(seq, num_new):
                victim = self._pick_victim(in_batch, seq)
                self._preempt(victim)
                batch.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                continue
            batch.seqs.append(seq)
            batch.num_tokens.append(num_new)
            in_batch.add(seq.seq_id)
            budget -= num_new
        if not batch.preempted:
            self._admit(batch, budget)
        return batch

    def _admit(self, batch: ScheduledBatch, budget: int) -> None:
        bm = self.block_manager
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            hits = bm.match_prefix(seq)
            computed = len(hits) * bm.block_size
            num_new = min(len(seq) - computed, budget)
            needed = bm.blocks_for(computed + num_new) - len(hits)
            if bm.num_free_after_adopting(hits) - needed < self.watermark_blocks and self.running:
                break
            if bm.num_free_after_adopting(hits) < needed:
                break
            self.waiting.popleft()
            bm.adopt_prefix(seq, hits)
            if not seq.admitted_once:
                seq.num_cached_tokens = computed
                seq.admitted_once = True
            ok = bm.allocate_slots(seq, num_new)
            assert ok
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.seqs.append(seq)
            batch.num_tokens.append(num_new)
            budget -= num_new

    def _pick_victim(self, in_batch: set[int], current: Sequence) -> Sequence:
        candidates = [s for s in self.running if s.seq_id not in in_batch and s is not current]
        if not candidates:
            return current
        return max(candidates, key=lambda s: s.arrival_time)

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.running.remove(seq)
        # back to the head of the queue, oldest first among the preempted
        pos = 0
        while pos < len(self.waiting) and self.waiting[pos].arrival_time < seq.arrival_time:
            pos += 1
        self.waiting.insert(pos, seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Take `seq` out at once and give its blocks back."""
        if seq.status is SequenceStatus.FINISHED:
            return
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
