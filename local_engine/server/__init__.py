"""The OpenAI-compatible HTTP server around one LLMEngine."""
