"""Config of stage ``report`` (section ``report``, :mod:`lmpipe.report`).

``lmpipe.config`` imports every section, so this file is in every stage's code deps and in every import of
``lmpipe.config``: it lives apart from ``report.py`` so that neither carries that module's code and imports.
"""

from __future__ import annotations

from pydantic import Field

from lmpipe.sections import Section


class ReportConfig(Section):
    title: str = "lmpipe run report"
    dvclive_glob: str = Field(
        "dvclive/*/plots/metrics", description="DVCLive metric folders, one per training stage"
    )
    funnel_stages: list[str] = Field(
        default_factory=lambda: ["ingest", "filter", "dedup", "augment"],
        description="metrics/<stage>.json in order",
    )
    max_samples: int = Field(40, ge=0, description="sample generations shown per model")
