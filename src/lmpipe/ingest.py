"""Stage ``ingest``: every configured source → one sharded document dataset (+ quarantine)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lmpipe.executors import Executor
from lmpipe.formats import read_unit
from lmpipe.ingest_config import IngestConfig
from lmpipe.sharded import run_stage
from lmpipe.sources import plan_units
from lmpipe.web.reader import WEB_FORMATS
from lmpipe.web.urls import url_lists_key

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO


def ingest(cfg: IngestConfig, out_dir: str | Path, rejected_dir: str | Path, executor: Executor) -> dict:
    """Read all sources into ``out_dir``; undecodable or invalid records go to ``rejected_dir``."""
    units = [u for src in cfg.sources for u in plan_units(src, cfg.group_mib << 20)]
    if any(u.format in WEB_FORMATS for _, g in units for u in g.units):
        # the URL lists are files, not params: their content is part of what a web unit's result depends on
        lists = url_lists_key(cfg.web.url_filter)
        units = [(f"{k}|{lists}" if any(u.format in WEB_FORMATS for u in g.units) else k, g) for k, g in units]
    stats = run_stage(read_unit, units, cfg, out_dir, rejected_dir, executor, cfg.docs_per_shard, desc="ingest")
    stats["sources"] = len(cfg.sources)
    return stats


def run(p: Params, io: StageIO, ex: Executor) -> dict:
    return ingest(p.ingest, io.out, io.rejected, ex)
