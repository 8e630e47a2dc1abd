"""The `stages.context` sub-sections, validated like the rest of the config (docs/context.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolSelectionConfig(_Strict):
    enabled: bool = True
    # A request with more tools than this has them selected; with fewer, all are sent.
    max_tools: int = Field(default=20, ge=1)
    # How many of the most relevant tools are kept (plus those used before or forced).
    top_k: int = Field(default=5, ge=1)
    # "onnx": all-MiniLM-L6-v2 (recall@5 0.97 on BFCL); "static": its word-piece vectors
    # (0.90, ~50x cheaper); bench/tool_selection_eval.py.
    embedder: Literal["onnx", "static"] = "onnx"
    # When the answer calls a tool that was left out, ask again with every tool.
    resend_on_removed_tool: bool = True


class PruneToolResultsConfig(_Strict):
    enabled: bool = True
    # Tool results shorter than this are kept even when stale: a stub would save little.
    min_tokens: int = Field(default=200, ge=1)


class HistoryConfig(_Strict):
    # Unset: on exactly when `summary_model` is set.
    enabled: bool | None = None
    # Past this many prompt tokens, the middle of the conversation is summarised.
    budget_tokens: int = Field(default=16000, ge=256)
    # User turns (with what followed each) kept word for word at the end.
    keep_recent_turns: int = Field(default=4, ge=1)
    # The model alias that writes summaries (a small cloud model, the local engine ...).
    summary_model: str | None = None
    summary_max_tokens: int = Field(default=512, ge=16)
    # How long a summary is kept in the store for the conversations that share its prefix.
    summary_ttl_s: float = Field(default=86400.0, gt=0)

    @model_validator(mode="after")
    def _needs_a_model(self) -> HistoryConfig:
        if self.enabled and not self.summary_model:
            raise ValueError("history.enabled needs history.summary_model, the alias that writes summaries")
        return self

    @property
    def active(self) -> bool:
        return bool(self.summary_model) if self.enabled is None else self.enabled
