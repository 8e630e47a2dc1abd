"""Per-request decoding settings, validated once at the boundary."""

from __future__ import annotations

from dataclasses import dataclass, field

from local_engine.errors import InvalidRequestError


@dataclass(slots=True)
class SamplingParams:
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: off
    seed: int | None = None
    max_tokens: int = 16
    n: int = 1
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.temperature > 100:
            raise InvalidRequestError("temperature must be in [0, 100]", "temperature")
        if not 0 < self.top_p <= 1:
            raise InvalidRequestError("top_p must be in (0, 1]", "top_p")
        if self.top_k < -1:
            raise InvalidRequestError("top_k must be -1, 0 or positive", "top_k")
        if self.max_tokens < 1:
            raise InvalidRequestError("max_tokens must be at least 1", "max_tokens")
        if not 1 <= self.n <= 16:
            raise InvalidRequestError("n must be in 1..16", "n")
        if len(self.stop) > 16 or any(not s for s in self.stop):
            raise InvalidRequestError("stop must be at most 16 non-empty strings", "stop")
        if self.top_k == -1:
            self.top_k = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
