"""Config of the data gates (section ``gates``, :mod:`lmpipe.gates`): expectations per data stage.

``lmpipe.config`` imports every section, so this file is in every stage's code deps and in every import of
``lmpipe.config``: it lives apart from ``gates.py`` so that neither carries that module's code and imports.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from lmpipe.sections import Section

DropBounds = tuple[float, float]


class StageGateConfig(Section):
    """Expectations for one data stage's output (and the stage's drop statistics)."""

    min_docs: int = Field(1, ge=0)
    min_chars: int = Field(1, ge=0, description="every kept text has at least this many characters")
    max_chars: int = Field(1_000_000, ge=1)
    domains: list[str] | None = Field(None, description="allowed domains; None = gates.domains")
    drop_bounds: dict[str, DropBounds] = Field(
        default_factory=dict, description="reason -> [min, max] fraction of the stage's input it may drop"
    )
    max_drop_fraction: float = Field(1.0, ge=0.0, le=1.0, description="bound for reasons not in drop_bounds")

    @model_validator(mode="after")
    def _check(self) -> StageGateConfig:
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must not exceed max_chars ({self.max_chars})")
        for reason, (lo, hi) in self.drop_bounds.items():
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"drop_bounds.{reason}: need 0 <= min <= max <= 1, got [{lo}, {hi}]")
        return self


class GatesConfig(Section):
    """great-expectations gates after each data stage; a failed gate fails the stage."""

    enabled: bool = True
    sample_docs: int = Field(
        5000, ge=1, description="rows validated in full (all columns); stats stream over all"
    )
    domains: list[str] = Field(default_factory=lambda: ["prose", "code", "math", "fiction", "web"])
    stages: dict[str, StageGateConfig] = Field(default_factory=dict)

    def for_stage(self, stage: str) -> StageGateConfig:
        return self.stages.get(stage, StageGateConfig())
