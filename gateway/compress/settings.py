"""The compress stage's config section (`stages.compress`) and its level type.

Kept apart from gateway.config's other sections so that config stays one readable file;
it imports only pydantic, so loading config never loads the compression code.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _level(value: Any) -> Any:
    if value is False:
        return "off"  # YAML reads a bare `off` as false
    if value is True:
        raise ValueError("expected off, lossless or a ratio between 0 and 1")
    if isinstance(value, int | float) and not 0 < value < 1:
        raise ValueError("a ratio level must be between 0 and 1 (exclusive): the share of tokens to keep")
    return value


# off | lossless | the share (0-1, exclusive) of a long block's tokens to keep.
CompressLevel = Annotated[Literal["off", "lossless"] | float, BeforeValidator(_level)]


class CompressStageConfig(BaseModel):
    """Shrinks prompts before they are sent (docs/compression.md): lossless rewrites always,
    query-aware extraction of long blocks when `level` is a ratio. A team's policy may set
    `level` and turn each transformation off under `stages.compress`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    level: CompressLevel = "lossless"
    # A block (document, tool result, earlier turn) is compressed extractively from this size.
    min_block_tokens: int = Field(default=300, gt=0)
    whitespace: bool = True
    minify_json: bool = True
    dedupe: bool = True
