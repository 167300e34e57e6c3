"""The base of every typed config section (kept apart from ``config.py`` so component configs beside their
code, e.g. ``lmpipe.web.config``, can subclass it while ``config.py`` imports them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)
