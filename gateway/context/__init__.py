"""Context engineering for chat requests: tool selection, stale tool-result pruning and
history summarisation. Pure functions over OpenAI-format bodies; the `context` stage
(gateway.stages.context) applies them and accounts for what they saved."""
