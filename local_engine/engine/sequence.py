"""One sequence being generated: its tokens, how many have KV in the cache, and its blocks."""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field

from local_engine.sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = enum.auto()
    RUNNING = enum.auto()
    FINISHED = enum.auto()


_ids = itertools.count()


@dataclass(slots=True, eq=False)
class Sequence:
    """A prompt plus what has been generated for it.

    `num_computed_tokens` counts tokens whose keys and values are in the cache; the
    scheduler advances it by however many tokens a step runs (a prefill chunk or one
    decode token). A preempted sequence drops its blocks and sets it back to 0, so its
    prompt *and* the tokens generated so far are recomputed on readmission.
    """

    token_ids: list[int]
    params: SamplingParams
    request_id: str = ""
    index: int = 0  # which of the request's n choices
    cache_salt: str = ""  # tenant key: prefix-cache hashes of different tenants never meet
    seq_id: int = field(default_factory=lambda: next(_ids))
    status: SequenceStatus = SequenceStatus.WAITING
    num_prompt_tokens: int = 0
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache on first admission
    num_hashed_blocks: int = 0  # leading full blocks already registered in the prefix cache
    block_hashes: list[int] = field(default_factory=list)
    block_table: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    arrival_time: float = field(default_factory=time.monotonic)
    first_token_time: float | None = None
    num_preemptions: int = 0
    admitted_once: bool = False

    def __post_init__(self) -> None:
        self.num_prompt_tokens = len(self.token_ids)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_completion_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def completion_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def last_token_id(self) -> int:
        return self.token_ids[-1]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)
