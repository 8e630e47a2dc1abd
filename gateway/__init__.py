"""Tollgate: an OpenAI-compatible LLM gateway that cuts what every request costs."""

from gateway.env import prepare_offline_environment

prepare_offline_environment()

__version__ = "0.1.0"
