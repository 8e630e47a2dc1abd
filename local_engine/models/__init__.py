"""Model code by family; every supported family is a Llama-shaped decoder with flags."""

from __future__ import annotations

from torch import nn

from local_engine.config import ModelConfig
from local_engine.models.llama import LlamaForCausalLM

MODEL_CLASSES: dict[str, type[LlamaForCausalLM]] = {
    "llama": LlamaForCausalLM,
    "mistral": LlamaForCausalLM,
    "qwen2": LlamaForCausalLM,
    "qwen3": LlamaForCausalLM,
}


def build_model(cfg: ModelConfig, max_positions: int) -> nn.Module:
    return MODEL_CLASSES[cfg.family](cfg, max_positions)
