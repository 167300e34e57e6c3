"""The run report's building blocks: sections, tables and figures (matplotlib Agg PNGs embedded as base64),
shared by :mod:`lmpipe.report` (assembly, data and training sections) and :mod:`lmpipe.report_eval`
(evaluation sections)."""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    title: str
    png_b64: str


@dataclass
class Link:
    text: str
    href: str  # relative to the report page


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    missing: str | None = None  # why the section is empty, shown plainly


# ---------------------------------------------------------------------------------------------- util
def plt_agg():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any, title: str) -> Figure:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt_agg().close(fig)
    return Figure(title, base64.b64encode(buf.getvalue()).decode("ascii"))


def read_json(path: Path) -> Any | None:
    return json.loads(path.read_text()) if path.is_file() else None


def fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return "" if v is None else str(v)


def grouped_bars(groups: list[str], series: dict[str, list[float]], ylabel: str, title: str) -> Figure:
    plt = plt_agg()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(groups) * max(1, len(series)) ** 0.5 + 2), 3.4))
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, values, width, label=name)
    ax.set_xticks(range(len(groups)), groups, rotation=20 if len(groups) > 5 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(0, color="black", linewidth=0.6)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return png(fig, title)


# ------------------------------------------------------------------------------------------ sections
