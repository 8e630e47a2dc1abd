"""`tollgate-engine serve --model DIR`: load a model and serve the OpenAI-compatible API."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# offline by default: a hub name must fail at once (set before transformers is imported)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tollgate-engine", description="Tollgate's self-hosted serving engine")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a model over the OpenAI-compatible HTTP API")
    serve.add_argument("--model", required=True, help="HF-format model directory")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8100)
    serve.add_argument("--served-model-name", default=None, help="model id clients send (default: dir name)")
    serve.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    serve.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    serve.add_argument("--block-size", type=int, default=16)
    serve.add_argument("--num-kv-blocks", type=int, default=0, help="0: size from memory")
    serve.add_argument("--cpu-kv-cache-gb", type=float, default=1.0)
    serve.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    serve.add_argument("--max-num-seqs", type=int, default=64)
    serve.add_argument("--max-num-batched-tokens", type=int, default=2048)
    serve.add_argument("--max-model-len", type=int, default=0)
    serve.add_argument("--max-waiting", type=int, default=1024)
    serve.add_argument("--no-prefix-caching", action="store_true")
    serve.add_argument("--attention-backend", default="auto", choices=["auto", "reference", "flex"])
    serve.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    serve.add_argument("--log-level", default="info")
    return parser


def main() -> None:
    args = _parser().parse_args()
    import torch
    import uvicorn

    from local_engine.config import Config
    from local_engine.engine.llm_engine import LLMEngine
    from local_engine.errors import ModelLoadError
    from local_engine.server.app import build_app

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config = Config(
            model=args.model,
            dtype=args.dtype,
            device=args.device,
            block_size=args.block_size,
            num_kv_blocks=args.num_kv_blocks,
            cpu_kv_cache_gb=args.cpu_kv_cache_gb,
            gpu_memory_utilization=args.gpu_memory_utilization,
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            max_model_len=args.max_model_len,
            max_waiting=args.max_waiting,
            enable_prefix_caching=not args.no_prefix_caching,
            attention_backend=args.attention_backend,
        )
        engine = LLMEngine(config)
    except (ModelLoadError, ValueError) as exc:
        print(f"tollgate-engine: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    name = args.served_model_name or Path(args.model).resolve().name
    app = build_app(engine, name)
    print(
        f"tollgate-engine: serving {name!r} on http://{args.host}:{args.port} "
        f"({config.torch_device.type}, {config.torch_dtype}, {engine.model_runner.num_blocks} KV blocks, "
        f"attention={engine.model_runner.backend.name})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
