"""The self-hosted serving engine: its own process and OpenAI-compatible server."""

from local_engine.config import Config
from local_engine.engine.llm_engine import CompletionOutput, LLMEngine
from local_engine.sampling_params import SamplingParams

__all__ = ["CompletionOutput", "Config", "LLMEngine", "SamplingParams"]
