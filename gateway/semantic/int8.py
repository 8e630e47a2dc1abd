"""The packaged int8 MiniLM, rebuilt once to compute in int8.

The packaged ONNX graph stores int8 weights but dequantises them when loaded, so every
MatMul runs in float32 (4-8 ms a query on one core). Rebuilt with onnxruntime's dynamic
quantisation (per-channel int8 weights, activations quantised per call), the MatMuls run
as integer products (VNNI/AVX2): about twice as fast, with vectors at cosine ~0.995 to the
float ones. The semantic-cache benchmark measures both (docs/benchmarks.md).

The rebuild takes a few seconds and is cached on disk, keyed by the source file, the
onnxruntime version and this recipe, in `$TOLLGATE_CACHE_DIR` (default
`~/.cache/tollgate`). Any failure (no `onnx` package, a read-only disk) falls back to the
packaged graph with a warning: slower, never wrong.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger("tollgate.semantic_cache")

_RECIPE = "dynamic-int8-per-channel-v1"


def cache_dir() -> Path:
    return Path(os.environ.get("TOLLGATE_CACHE_DIR") or Path.home() / ".cache" / "tollgate")


def int8_arithmetic(source: Path) -> Path:
    """The rebuilt graph for `source` (built now if not cached), or `source` when it cannot be."""
    try:
        import onnxruntime as ort

        stat = source.stat()
        key = hashlib.blake2b(
            f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{ort.__version__}|{_RECIPE}".encode(),
            digest_size=8,
        ).hexdigest()
        target = cache_dir() / f"{source.stem}-{_RECIPE}-{key}.onnx"
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        _build(source, target)
        return target
    except Exception as exc:  # the fast graph is an optimisation: any failure keeps the packaged one
        log.warning(
            "semantic cache: could not build the int8-arithmetic embedding model; using the packaged one",
            extra={"error": f"{type(exc).__name__}: {exc}"},
        )
        return source


def _build(source: Path, target: Path) -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        folded = Path(tmp) / "float.onnx"
        # Constant folding turns the stored int8 weights back into plain float MatMul weights,
        # which the quantiser then stores as int8 again, now with integer MatMuls.
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
        built = Path(tmp) / "int8.onnx"
        # The quantiser suggests a pre-processing pass through the root logger; it does not apply here.
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            quantize_dynamic(folded, built, per_channel=True, weight_type=QuantType.QInt8)
        finally:
            logging.disable(previous)
        # Atomic: processes starting together each build, and the last rename wins whole.
        os.replace(built, target)
