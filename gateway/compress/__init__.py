"""Prompt compression: lossless rewrites, de-duplication and query-aware extraction (docs/compression.md).

Import from the modules themselves: `settings` is read by config at start-up and must not
bring numpy or the tokenizers with it.
"""
