"""Process environment that must be in place before litellm, tiktoken, transformers or numpy load.

litellm otherwise downloads its price map at import time, tiktoken downloads its BPE files,
and the Hugging Face hub retries for a minute before failing on a machine with no network.
Every value is only a default: an operator's own setting wins.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def prepare_offline_environment() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The semantic cache's exact search is one numpy product on its worker thread: BLAS
    # threads of its own would only fight the event loop for the cores.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        # litellm ships cl100k_base / o200k_base here; find_spec does not import litellm.
        spec = importlib.util.find_spec("litellm")
        if spec is not None and spec.origin is not None:
            tokenizers = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
            if tokenizers.is_dir():
                os.environ["TIKTOKEN_CACHE_DIR"] = str(tokenizers)
