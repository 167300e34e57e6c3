"""Stage ``ingest``: every configured source → one sharded document dataset (+ quarantine), with the
pre-filter held-out sample (``ingest.holdout``) diverted to its own dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lmpipe.documents import Document, Rejected
from lmpipe.executors import Executor
from lmpipe.formats import read_unit
from lmpipe.holdout.sample import divert
from lmpipe.ingest_config import IngestConfig
from lmpipe.sharded import Held, run_stage
from lmpipe.sources import UnitGroup, plan_units
from lmpipe.web.reader import WEB_FORMATS
from lmpipe.web.urls import url_lists_key

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO


def read_and_hold(group: UnitGroup, cfg: IngestConfig) -> Iterator[Document | Rejected | Held]:
    """``read_unit`` with the held-out sample diverted (top level: every executor pickles it)."""
    return divert(read_unit(group, cfg), cfg.holdout)


def ingest(cfg: IngestConfig, out_dir: str | Path, rejected_dir: str | Path, executor: Executor,
           heldout_dir: str | Path | None = None) -> dict:
    """Read all sources into ``out_dir``; undecodable or invalid records go to ``rejected_dir``; with
    ``heldout_dir``, the ``cfg.holdout`` sample goes there (without it nothing is held out)."""
    units = [u for src in cfg.sources for u in plan_units(src, cfg.group_mib << 20)]
    if any(u.format in WEB_FORMATS for _, g in units for u in g.units):
        # the URL lists are files, not params: their content is part of what a web unit's result depends on
        lists = url_lists_key(cfg.web.url_filter)
        units = [(f"{k}|{lists}" if any(u.format in WEB_FORMATS for u in g.units) else k, g) for k, g in units]
    process = read_and_hold if heldout_dir is not None else read_unit
    stats = run_stage(process, units, cfg, out_dir, rejected_dir, executor, cfg.docs_per_shard, desc="ingest",
                      held_dir=heldout_dir)
    stats["sources"] = len(cfg.sources)
    if heldout_dir is not None:
        stats["conservation"] = (f"in {stats['in']} = kept {stats['kept']} + rejected {stats['rejected']} "
                                 f"+ held out {stats['held']}")
    return stats


def run(p: Params, io: StageIO, ex: Executor) -> dict:
    return ingest(p.ingest, io.out, io.rejected, ex, io.get("heldout"))
