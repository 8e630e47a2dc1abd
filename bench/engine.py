"""Benchmark local_engine against transformers `generate` on random-weight models.

Prints, per (implementation, batch, prompt length): output tokens/s, time to first token,
time per output token and peak memory; then the prefix-cache TTFT gain on a long shared
prefix. The last line is machine-readable:

    RESULT device=<cpu|gpu name> speedup_b64=<x> mbu_b1=<fraction> prefix_ttft_gain=<x>

CPU (the default there: a small Llama shape, a few minutes on two cores):
    .venv/bin/python bench/engine.py
GPU (Llama-3.1-8B and ~0.5B shapes in bf16):
    python bench/engine.py --shapes 8b,0.5b
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from local_engine import Config, LLMEngine, SamplingParams
from local_engine.random_model import build_random_model, build_tokenizer

SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    # name: (family, shape)
    "cpu-small": ("llama", {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4,
                            "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 32}),
    "0.5b": ("qwen2", {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                       "num_attention_heads": 14, "num_key_value_heads": 2, "head_dim": 64,
                       "vocab_size": 151936}),
    "8b": ("llama", {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                     "vocab_size": 128256, "tie_word_embeddings": False}),
}
# peak DRAM bandwidth, bytes/s, for memory-bandwidth utilisation (datasheet figures)
GPU_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12, "L4": 0.3e12, "A10": 0.6e12}


@dataclass(slots=True)
class Row:
    impl: str
    shape: str
    batch: int
    prompt: int
    gen: int
    tokens_per_s: float
    ttft_ms: float
    tpot_ms: float
    peak_mb: float


class PeakMemory:
    """Peak memory of one measurement: CUDA allocator peak, or the process's RSS high-water mark."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            try:  # writing 5 resets VmHWM (Linux)
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _prompts(batch: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, min(vocab, 1000)) for _ in range(length)] for _ in range(batch)]


def bench_engine(engine: LLMEngine, prompts: list[list[int]], gen: int) -> tuple[float, float, float]:
    """Submit all prompts at once; (tokens/s, mean TTFT ms, mean TPOT ms)."""
    device = engine.config.torch_device
    params = SamplingParams(temperature=0, max_tokens=gen, ignore_eos=True)
    _sync(device)
    start = time.perf_counter()
    first: dict[str, float] = {}
    done: dict[str, float] = {}
    for i, prompt in enumerate(prompts):
        engine.add_request(f"b{i}-{start}", prompt, params)
    while engine.has_unfinished():
        outputs = engine.step()
        now = time.perf_counter()  # step() returns after .tolist(): the GPU work is done
        for out in outputs:
            first.setdefault(out.request_id, now)
            if out.finished:
                done[out.request_id] = now
    total = time.perf_counter() - start
    ttft = statistics.mean(t - start for t in first.values())
    tpot = statistics.mean((done[r] - first[r]) / max(1, gen - 1) for r in first)
    return len(prompts) * gen / total, ttft * 1e3, tpot * 1e3


def bench_hf(model: Any, prompts: list[list[int]], gen: int, device: torch.device) -> tuple[float, float, float]:
    from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

    stamps: list[float] = []

    class Stamp(LogitsProcessor):  # called once per generated position: records when
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            _sync(device)
            stamps.append(time.perf_counter())
            return scores

    config = GenerationConfig(max_new_tokens=gen, do_sample=False, eos_token_id=None, pad_token_id=0)
    ids = torch.tensor(prompts, device=device)
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config,
                       logits_processor=LogitsProcessorList([Stamp()]))
    _sync(device)
    total = time.perf_counter() - start
    ttft = stamps[0] - start
    tpot = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)
    return len(prompts) * gen / total, ttft * 1e3, tpot * 1e3


def prefix_gain(engine: LLMEngine, prefix_len: int, suffix_len: int, repeats: int) -> tuple[float, float]:
    """TTFT of a request whose shared prefix is cold, then warm (mean of `repeats`)."""
    vocab = engine.config.hf_config.vocab_size
    prefix = _prompts(1, prefix_len, vocab, 7)[0]
    suffixes = _prompts(repeats + 1, suffix_len, vocab, 8)

    def ttft(prompt: list[int]) -> float:
        _, t, _ = bench_engine(engine, [prompt], 2)
        return t

    engine.block_manager.reset_prefix_cache()
    cold = ttft(prefix + suffixes[0])
    warm = statistics.mean(ttft(prefix + s) for s in suffixes[1:])
    return cold, warm


def decode_bytes_per_step(engine: LLMEngine, context: int) -> float:
    """Bytes a batch-1 decode step must read: every weight once plus the sequence's KV."""
    model = engine.model_runner.model
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return params + engine.model_runner.block_bytes / engine.config.block_size * context


def cpu_bandwidth() -> float:
    """Measured copy bandwidth of this CPU (read + write bytes / s), the CPU's practical roof."""
    src = torch.ones(64 * 2**20 // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--shapes", default=None, help="comma list of " + ", ".join(SHAPES))
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--prompt-lens", default="128,2048")
    parser.add_argument("--gen", type=int, default=None, help="output tokens per request")
    parser.add_argument("--prefix-len", type=int, default=None, help="shared prefix tokens (2k-4k)")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--work-dir", default=None, help="where random models are written")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    on_gpu = device.type == "cuda"
    shapes = (args.shapes or ("8b,0.5b" if on_gpu else "cpu-small")).split(",")
    batches = [int(b) for b in args.batches.split(",")]
    prompt_lens = [int(p) for p in args.prompt_lens.split(",")]
    gen = args.gen or (128 if on_gpu else 16)
    prefix_len = args.prefix_len or (4096 if on_gpu else 2048)
    dtype = "bfloat16" if on_gpu else "float32"
    device_name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    memory = PeakMemory(device)
    rows: list[Row] = []
    summary: dict[str, float] = {}
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="engine-bench-"))
    tokenizer = build_tokenizer(work / "tokenizer")
    print(f"# device={device_name} dtype={dtype} shapes={shapes} gen={gen} threads={args.threads}", flush=True)
    for shape_index, shape in enumerate(shapes):
        family, dims = SHAPES[shape]
        model_dir = work / shape
        if not (model_dir / "config.json").exists():
            build_random_model(model_dir, family, shape={**dims, "max_position_embeddings": 8192},
                               tokenizer=tokenizer, dtype=dtype, init_std=0.02, device=str(device))
        longest = max(max(prompt_lens), prefix_len + 64) + gen
        engine = LLMEngine(Config(
            str(model_dir), dtype=dtype, device=device.type, enable_prefix_caching=False,
            max_num_seqs=max(batches), max_num_batched_tokens=8192 if on_gpu else 4096, max_model_len=longest,
            num_kv_blocks=0 if on_gpu else max(batches) * (-(-(max(prompt_lens) + gen) // 16)) + 64,
        ))
        bench_engine(engine, _prompts(2, 32, 1000, 0), 4)  # warm-up
        hf_model = None
        if not args.no_hf:
            from transformers import AutoModelForCausalLM
            hf_model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype)).to(device).eval()
            bench_hf(hf_model, _prompts(2, 32, 1000, 0), 4, device)
        for prompt_len in prompt_lens:
            for batch in batches:
                prompts = _prompts(batch, prompt_len, engine.config.hf_config.vocab_size, batch + prompt_len)
                memory.reset()
                tps, ttft, tpot = bench_engine(engine, prompts, gen)
                rows.append(Row("engine", shape, batch, prompt_len, gen, tps, ttft, tpot, memory.peak_mb()))
                _print_row(rows[-1])
                if hf_model is not None:
                    memory.reset()
                    tps, ttft, tpot = bench_hf(hf_model, prompts, gen, device)
                    rows.append(Row("transformers", shape, batch, prompt_len, gen, tps, ttft, tpot, memory.peak_mb()))
                    _print_row(rows[-1])
        if shape_index == 0:
            summary.update(_summary(rows, engine, min(prompt_lens), max(batches), device, device_name))
            del engine, hf_model
            cached = LLMEngine(Config(str(model_dir), dtype=dtype, device=device.type, max_model_len=longest,
                                      num_kv_blocks=0 if on_gpu else 1024))
            bench_engine(cached, _prompts(1, 32, 1000, 1), 2)
            cold, warm = prefix_gain(cached, prefix_len, 32, repeats=3)
            summary["prefix_ttft_gain"] = cold / warm
            print(f"# prefix cache ({shape}): shared prefix {prefix_len} tokens + 32 new: "
                  f"TTFT cold {cold:.1f} ms, warm {warm:.1f} ms, gain {cold / warm:.1f}x", flush=True)
            del cached
        if on_gpu:
            torch.cuda.empty_cache()
    print(f"RESULT device={device_name.replace(' ', '_')} speedup_b64={summary.get('speedup_b64', float('nan')):.2f} "
          f"mbu_b1={summary.get('mbu_b1', float('nan')):.3f} prefix_ttft_gain={summary.get('prefix_ttft_gain', float('nan')):.2f}")


def _print_row(row: Row) -> None:
    if not getattr(_print_row, "header", False):
        print("| impl | shape | batch | prompt | gen | tok/s | TTFT ms | TPOT ms | peak MB |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        _print_row.header = True  # type: ignore[attr-defined]
    print(f"| {row.impl} | {row.shape} | {row.batch} | {row.prompt} | {row.gen} | {row.tokens_per_s:.1f} | "
          f"{row.ttft_ms:.1f} | {row.tpot_ms:.2f} | {row.peak_mb:.0f} |", flush=True)


def _summary(rows: list[Row], engine: LLMEngine, prompt_len: int, batch: int, device: torch.device,
             device_name: str) -> dict[str, float]:
    """speedup at the largest batch (shortest prompt) and batch-1 memory-bandwidth utilisation."""
    out: dict[str, float] = {}
    ours = {(r.batch, r.prompt): r for r in rows if r.impl == "engine"}
    theirs = {(r.batch, r.prompt): r for r in rows if r.impl == "transformers"}
    if (batch, prompt_len) in ours and (batch, prompt_len) in theirs:
        out["speedup_b64"] = ours[(batch, prompt_len)].tokens_per_s / theirs[(batch, prompt_len)].tokens_per_s
    if (1, prompt_len) in ours:
        row = ours[(1, prompt_len)]
        peak = next((bw for name, bw in GPU_BANDWIDTH.items() if name in device_name), 0.0) \
            if device.type == "cuda" else cpu_bandwidth()
        achieved = decode_bytes_per_step(engine, prompt_len + row.gen // 2) / (row.tpot_ms / 1e3)
        out["mbu_b1"] = achieved / peak if peak else float("nan")
    return out


if __name__ == "__main__":
    sys.exit(main())
