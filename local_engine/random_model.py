"""Tiny (or full-shape) random-weight models of real architectures, built offline.

Tests and the benchmark use these instead of hub checkpoints: a byte-level BPE tokenizer
trained on the standard library's own source, a ChatML template, and an HF model with
random weights saved by `save_pretrained`. transformers is used here only to write the
checkpoint; the engine reads it back with its own loader and model code.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
}

TINY_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}


def build_tokenizer(out_dir: Path, vocab_size: int = 1024, corpus_files: int = 40) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(str(p) for p in stdlib.glob("*.py"))[:corpus_files]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train(files, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
    fast.save_pretrained(str(out_dir))
    return fast


def build_random_model(
    out_dir: Path,
    family: str = "llama",
    shape: dict[str, Any] | None = None,
    tokenizer: Any = None,
    seed: int = 0,
    dtype: str = "float32",
    init_std: float = 0.5,
    device: str = "cpu",
) -> Path:
    """Write config, random weights and a tokenizer to `out_dir`; returns it.

    A large init_std (0.5) keeps a tiny model's greedy output varied; with HF's 0.02 it
    repeats one token.
    """
    import torch
    import transformers

    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        tokenizer = build_tokenizer(out_dir)
    else:
        tokenizer.save_pretrained(str(out_dir))
    config_name, model_name = FAMILIES[family]
    kwargs = {**TINY_SHAPE, **(shape or {})}
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    cfg = getattr(transformers, config_name)(
        vocab_size=kwargs.pop("vocab_size", len(tokenizer)),
        tie_word_embeddings=kwargs.pop("tie_word_embeddings", True),
        initializer_range=init_std,
        eos_token_id=eos,
        bos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=kwargs.pop("max_position_embeddings", 4096),
        **kwargs,
    )
    torch.manual_seed(seed)
    torch_dtype = getattr(torch, dtype)
    with torch.device(device):
        model = getattr(transformers, model_name)(cfg).to(torch_dtype)
    model.save_pretrained(str(out_dir))
    return out_dir
