"""Linear layers that fuse several checkpoint matrices into one matmul (q/k/v, gate/up)."""

from __future__ import annotations

import torch
from torch import nn


class MergedLinear(nn.Linear):
    """One matmul whose output rows are the concatenation of named checkpoint shards.

    The loader calls `load_shard` for e.g. `q_proj`, `k_proj`, `v_proj`; each lands in its
    slice of the fused weight (and bias).
    """

    def __init__(self, in_features: int, shard_sizes: dict[str, int], bias: bool) -> None:
        super().__init__(in_features, sum(shard_sizes.values()), bias=bias)
        self.shard_offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for name, size in shard_sizes.items():
            self.shard_offsets[name] = (start, size)
            start += size

    def load_shard(self, shard: str, param_name: str, tensor: torch.Tensor) -> None:
        start, size = self.shard_offsets[shard]
        target = self.weight if param_name == "weight" else self.bias
        if target is None or tensor.shape[0] != size:
            raise ValueError(f"{shard}.{param_name}: unexpected shape {tuple(tensor.shape)}")
        with torch.no_grad():
            target[start : start + size].copy_(tensor)
