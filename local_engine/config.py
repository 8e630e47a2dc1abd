"""One config object for the engine, and the model shape read from an HF `config.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from local_engine.errors import ModelLoadError

# architectures[0] in config.json -> the family our model code implements
SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass(slots=True)
class ModelConfig:
    """The shape of a decoder-only transformer, normalised across HF config versions."""

    architecture: str
    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool  # bias on q/k/v projections (Qwen2)
    qk_norm: bool  # RMSNorm on each head of q and k before RoPE (Qwen3)
    sliding_window: int | None
    torch_dtype: torch.dtype
    eos_token_ids: list[int]

    @classmethod
    def from_dir(cls, model_dir: Path) -> ModelConfig:
        path = model_dir / "config.json"
        if not path.is_file():
            raise ModelLoadError(f"{model_dir}: config.json not found")
        raw: dict[str, Any] = json.loads(path.read_text())
        archs = raw.get("architectures") or []
        arch = archs[0] if archs else ""
        if arch not in SUPPORTED_ARCHITECTURES:
            supported = ", ".join(sorted(SUPPORTED_ARCHITECTURES))
            raise ModelLoadError(
                f"{model_dir}: unsupported architecture {arch or '(none)'!r}; supported: {supported}"
            )
        family = SUPPORTED_ARCHITECTURES[arch]
        heads = int(raw["num_attention_heads"])
        hidden = int(raw["hidden_size"])
        # transformers >= 5 nests rope settings under rope_parameters; older files keep
        # rope_theta at the top level and rope_scaling beside it.
        rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
        rope_theta = float(rope.pop("rope_theta", raw.get("rope_theta", 10000.0)))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "llama3", "linear"):
            raise ModelLoadError(f"{model_dir}: unsupported rope_type {rope_type!r}")
        window = raw.get("sliding_window")
        if family == "qwen2" or family == "qwen3":
            if raw.get("use_sliding_window"):
                raise ModelLoadError(f"{model_dir}: use_sliding_window=true is not supported")
            window = None
        dtype_name = str(raw.get("dtype") or raw.get("torch_dtype") or "float32")
        eos = raw.get("eos_token_id")
        gen_path = model_dir / "generation_config.json"
        if gen_path.is_file():
            eos = json.loads(gen_path.read_text()).get("eos_token_id", eos)
        eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        return cls(
            architecture=arch,
            family=family,
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(raw["intermediate_size"]),
            num_hidden_layers=int(raw["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or hidden // heads),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=None if rope_type == "default" else {**rope, "rope_type": rope_type},
            max_position_embeddings=int(raw.get("max_position_embeddings", 4096)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            attention_bias=family == "qwen2" or bool(raw.get("attention_bias", False)),
            qk_norm=family == "qwen3",
            sliding_window=int(window) if window else None,
            torch_dtype=_DTYPES.get(dtype_name, torch.float32),
            eos_token_ids=eos_ids,
        )


def resolve_dtype(name: str, model_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """`auto` keeps the checkpoint's dtype on GPU; on CPU it is float32 (bf16 matmuls are slow there)."""
    if name == "auto":
        return model_dtype if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"dtype: expected one of auto, {', '.join(_DTYPES)}; got {name!r}")
    return _DTYPES[name]


@dataclass(slots=True)
class Config:
    """Everything the engine needs, passed down from LLMEngine to each component."""

    model: str
    dtype: str = "auto"
    device: str = "auto"  # auto | cpu | cuda
    block_size: int = 16
    num_kv_blocks: int = 0  # 0: size from gpu_memory_utilization (CUDA) or cpu_kv_cache_gb (CPU)
    gpu_memory_utilization: float = 0.85
    cpu_kv_cache_gb: float = 1.0
    max_num_seqs: int = 64  # admission limit: sequences running at once
    max_num_batched_tokens: int = 2048  # token budget of one step; long prompts are chunked to fit
    max_model_len: int = 0  # 0: the model's max_position_embeddings
    max_waiting: int = 1024  # admission limit: queued requests before new ones are refused
    enable_prefix_caching: bool = True
    attention_backend: str = "auto"  # auto | reference | flex
    hf_config: ModelConfig = field(init=False)
    torch_dtype: torch.dtype = field(init=False)
    torch_device: torch.device = field(init=False)

    def __post_init__(self) -> None:
        if not 16 <= self.block_size <= 64 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size: must be a power of two in 16..64, got {self.block_size}")
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be positive")
        model_dir = Path(self.model)
        if not model_dir.is_dir():
            raise ModelLoadError(f"{self.model}: not a directory")
        self.hf_config = ModelConfig.from_dir(model_dir)
        if self.device == "auto":
            self.torch_device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self.torch_device = torch.device(self.device)
        self.torch_dtype = resolve_dtype(self.dtype, self.hf_config.torch_dtype, self.torch_device)
        limit = self.hf_config.max_position_embeddings
        self.max_model_len = min(self.max_model_len, limit) if self.max_model_len else limit
