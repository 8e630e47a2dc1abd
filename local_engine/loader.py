"""Read an HF-format safetensors checkpoint into our model code."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from local_engine.config import ModelConfig
from local_engine.errors import ModelLoadError
from local_engine.layers.linear import MergedLinear
from local_engine.models import build_model


def load_model(
    model_dir: Path, cfg: ModelConfig, dtype: torch.dtype, device: torch.device, max_positions: int
) -> nn.Module:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{model_dir}: no *.safetensors weight files found")
    # build on the meta device so a large model never materialises random weights twice
    with torch.device("meta"):
        model = build_model(cfg, max_positions)
    model = model.to_empty(device=device).to(dtype)
    if cfg.tie_word_embeddings:  # to_empty gives each module its own tensor: tie again
        model.lm_head.weight = model.model.embed_tokens.weight
    # to_empty leaves non-persistent buffers (the RoPE tables) uninitialised: rebuild them
    rotary = model.model.layers[0].self_attn.rotary
    fresh = type(rotary)(cfg.head_dim, max_positions, cfg.rope_theta, cfg.rope_scaling).to(device)
    rotary.cos, rotary.sin = fresh.cos, fresh.sin
    packed: dict[str, tuple[str, str]] = getattr(model, "packed_modules", {})
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    loaded: set[str] = set()
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for name in f.keys():
                if name.endswith("rotary_emb.inv_freq"):
                    continue
                if name == "lm_head.weight" and cfg.tie_word_embeddings:
                    continue
                tensor = f.get_tensor(name)
                module_path, _, param_name = name.rpartition(".")
                parent, _, leaf = module_path.rpartition(".")
                if leaf in packed:
                    fused_name, shard = packed[leaf]
                    fused_path = f"{parent}.{fused_name}"
                    fused = modules.get(fused_path)
                    if not isinstance(fused, MergedLinear):
                        raise ModelLoadError(f"{file.name}: unexpected tensor {name}")
                    fused.load_shard(shard, param_name, tensor)
                    loaded.add(f"{fused_path}.{param_name}:{shard}")
                    continue
                param = params.get(name)
                if param is None:
                    raise ModelLoadError(f"{file.name}: unexpected tensor {name}")
                if param.shape != tensor.shape:
                    raise ModelLoadError(
                        f"{file.name}: {name} has shape {tuple(tensor.shape)}, expected {tuple(param.shape)}"
                    )
                with torch.no_grad():
                    param.copy_(tensor)
                loaded.add(name)
    missing = _expected(model, packed, cfg) - loaded
    if missing:
        raise ModelLoadError(f"{model_dir}: weights missing from checkpoint: {', '.join(sorted(missing)[:5])}")
    return model.eval()


def _expected(model: nn.Module, packed: dict[str, tuple[str, str]], cfg: ModelConfig) -> set[str]:
    expected: set[str] = set()
    for name, _ in model.named_parameters():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        module = model.get_submodule(name.rpartition(".")[0])
        if isinstance(module, MergedLinear):
            expected.update(f"{name}:{shard}" for shard in module.shard_offsets)
        else:
            expected.add(name)
    return expected
