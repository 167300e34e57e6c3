"""Params of the ``refine`` stage (``refine:`` in params.yaml)."""

from __future__ import annotations

from pydantic import Field

from lmpipe.sections import Section


class RefineConfig(Section):
    """ProX-style refinement: an LLM writes an edit program per document, our interpreter applies it."""

    enabled: bool = Field(False, description="off: documents pass through unchanged (hard links)")
    domains: list[str] = Field(
        default_factory=list, description="domains refined; empty = all, others pass through"
    )
    max_docs: int | None = Field(
        None, ge=0, description="refine at most this many selected docs (dataset order)"
    )
    max_lines: int = Field(
        40, ge=1, description="numbered lines shown to the model; later lines are kept as is"
    )
    line_chars: int = Field(200, ge=8, description="each shown line is cut to this many characters")
    max_tokens: int = Field(96, ge=8, description="tokens per program")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy")
    prompts_dir: str | None = Field(
        None, description="a directory whose refine.txt overrides the packaged prompt"
    )
    docs_per_shard: int = Field(5000, ge=1)
    workers: int = Field(1, ge=1, description="each worker loads its own embedded model")
